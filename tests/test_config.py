"""Typed config: YAML, dotted overrides, validation with suggestions."""

from pathlib import Path

import pytest

from cnnlab import config
from cnnlab.classify import check_names
from cnnlab.errors import UserError


def test_defaults_resolve():
    cfg = config.resolve()
    assert cfg.model.name == "cnn4" and cfg.optim.name == "rmsprop" and cfg.train.batch_size == 512


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {name: cnn4, batchnorm: true}\ntrain: {epochs: 3, precision: bf16}\n")
    cfg = config.resolve(f, dict([config.parse_override("train.epochs=7"),
                                  config.parse_override("model.dropout=[0.1, 0.2, 0.3]"),
                                  config.parse_override("data.augment.flip=true")]))
    assert cfg.train.epochs == 7 and cfg.train.precision == "bf16"
    assert cfg.model.args == {"batchnorm": True, "dropout": [0.1, 0.2, 0.3]}
    assert cfg.data.augment.flip is True


def test_yaml_round_trip(tmp_path):
    cfg = config.resolve(None, {"model.name": "mlp", "model.hidden": 64, "optim.lr": 0.01})
    f = tmp_path / "out.yaml"
    f.write_text(cfg.to_yaml())
    assert config.differences(config.resolve(f), cfg, exempt=set()) == []


def test_unknown_key_suggests_nearest():
    with pytest.raises(UserError, match=r"unknown config key 'train.epoch' \(did you mean 'train.epochs'\?\)"):
        config.resolve(None, {"train.epoch": 3})
    with pytest.raises(UserError, match=r"'optim.lrr'.*'optim.lr'"):
        config.resolve(None, {"optim.lrr": 3})


@pytest.mark.parametrize("key,value,message", [
    ("train.epochs", 0, "'train.epochs' must be greater than 0"),
    ("train.epochs", -2, "'train.epochs' must be greater than 0"),
    ("train.batch_size", 0, "'train.batch_size' must be greater than 0"),
    ("train.batch_size", "big", "'train.batch_size' must be int"),
    ("train.batch_size", 1.5, "'train.batch_size' must be int"),
    ("train.precision", "fp16", "'train.precision' must be one of auto, fp32, bf16"),
    ("train.channels_last", "maybe", "'train.channels_last' must be one of auto, true, false"),
    ("train.budget_minutes", 0, "'train.budget_minutes' must be greater than 0 minutes, got 0"),
    ("train.budget_minutes", -3, "'train.budget_minutes' must be greater than 0 minutes, got -3"),
    ("train.label_smoothing", 1.0, "label_smoothing"),
    ("optim.name", "muon", "'optim.muon_lr' must be set when optim.name is muon"),
])
def test_invalid_values(key, value, message):
    with pytest.raises(UserError, match=message):
        config.resolve(None, {key: value})


@pytest.mark.parametrize("key,value,message", [
    ("optim.name", "adamm", r"unknown optimizer 'adamm' \(did you mean 'adam'\?\); valid optimizers:"),
    ("schedule.name", "cosin", r"unknown schedule 'cosin'.*valid schedules: constant"),
    ("model.name", "resnet", "unknown model 'resnet'"),
    ("model.widths_", [1, 2], "unknown argument 'model.widths_' for model 'cnn4' \\(did you mean 'widths'"),
    ("data.dataset", "cifar100", "unknown dataset 'cifar100'"),
])
def test_unknown_names_are_checked_by_their_registries(key, value, message):
    cfg = config.resolve(None, {key: value})  # types and ranges are fine: config knows no registry
    with pytest.raises(UserError, match=message):
        check_names(cfg)


def test_config_imports_no_registry():
    """Imports flow downward: config/ may not import data/, engine/, models/ or classify (they import it)."""
    import ast

    for module in Path(config.__file__).parent.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.split(".")[0] in ("data", "engine", "models", "classify")
                    or m.startswith("cnnlab.") and m.split(".")[1] in ("data", "engine", "models", "classify")], \
            (module.name, imported)


def test_switches_accept_booleans_and_words():
    for value, expected in ((True, "true"), (False, "false"), ("yes", "true"), ("off", "false"), ("AUTO", "auto")):
        assert config.resolve(None, {"train.channels_last": value}).train.channels_last == expected
    assert config.resolve().train.precision == "auto" and config.resolve().train.channels_last == "auto"


def test_bad_yaml_names_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: {epochs: [1,\n")
    with pytest.raises(UserError, match=r"bad.yaml is not valid YAML"):
        config.resolve(f)
    with pytest.raises(UserError, match=r"missing.yaml does not exist"):
        config.resolve(tmp_path / "missing.yaml")


def test_override_syntax():
    with pytest.raises(UserError, match="section.key=value"):
        config.parse_override("train.epochs")
    assert config.parse_override("optim.lr=1e-3") == ("optim.lr", 1e-3)


def test_presets_ship_inside_the_package_and_resolve_by_name(tmp_path, monkeypatch):
    """The transfer commands' defaults and `--config fast89` must not depend on the working directory or on
    a source checkout: the presets are package data, found by name from anywhere."""
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert {"fast89", "features", "finetune", "transfer"} <= set(config.presets())
    assert config.load_yaml("fast89") == config.load_yaml("fast89.yaml") == \
        config.load_yaml(config.PRESETS_DIR / "fast89.yaml")
    assert config.resolve("features", {"data.path": "photos"}).transfer.features is True
    with pytest.raises(UserError, match="name a preset: .*fast89"):
        config.load_yaml("fast8")
    with pytest.raises(UserError, match="check the path$"):
        config.load_yaml("somewhere/fast89.yaml")


def test_every_preset_loads_into_the_settings_of_its_command(tmp_path, monkeypatch):
    """A preset is a classifier config, an ablation grid (with runs:) or a style network's settings (style-*):
    each must load as such, so a misspelt key fails here, not in a user's run."""
    from cnnlab.ablate import plan as plan_grid
    from cnnlab.style import StyleTrainSettings

    monkeypatch.chdir(tmp_path)
    for name in config.presets():
        if "runs" in config.load_yaml(name):
            assert plan_grid(config.find_config(name), tmp_path / "grid")[2]  # every run's config resolves
        elif name.startswith("style-"):
            settings = config.load_settings(StyleTrainSettings, name, {"style": "s.jpg", "content_dir": "photos"})
            assert settings.stability_weight > 0 and settings.stability_shift > 0  # style-video's point
        else:
            config.resolve(name, {"data.path": "photos"} if name in ("features", "finetune", "transfer") else {})


def test_packaging_declares_the_presets():
    """setuptools copies only declared package data into a wheel: the presets' pattern must be declared."""
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["cnnlab"]
    declared = {p.name for pattern in patterns for p in config.PRESETS_DIR.parent.glob(pattern)}
    assert declared >= {f"{name}.yaml" for name in config.presets()}


def test_one_list_says_what_may_change_on_resume():
    """config.RESUME_CHANGEABLE is the one list: differences() ignores exactly its keys."""
    cfg = config.resolve()
    changed = config.resolve(None, {"train.threads": 1, "train.device": "cpu", "train.progress": False,
                                    "train.detect_anomaly": True, "data.root": "/elsewhere", "data.download": False,
                                    "data.cache_dir": "/cache", "out": "runs/x"})
    assert config.differences(cfg, changed) == []
    assert len(config.differences(cfg, changed, exempt=set())) == len(config.RESUME_CHANGEABLE)
    assert set(config.RESUME_CHANGEABLE) <= set(config.all_keys())
    assert config.differences(cfg, config.resolve(None, {"train.seed": 1})) == ["train.seed: 0 -> 1"]


def test_choices_are_declared_on_the_fields():
    """one_of(...) fields: the loader checks them, the first value is the default."""
    assert config.field_info(config.Config, "train.precision").choices == ("auto", "fp32", "bf16")
    assert config.TrainConfig().precision == "auto" and config.TrainConfig().tta == "none"
    with pytest.raises(UserError, match=r"'train.tta' must be one of none, flip, flip_translate, got 'flipp' "
                                        r"\(did you mean 'flip'\?\)"):
        config.resolve(None, {"train.tta": "flipp"})

