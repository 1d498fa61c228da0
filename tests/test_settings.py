"""One settings mechanism: every settings dataclass loads through config.load_settings (YAML, KEY=VALUE, typed,
did-you-mean, choices, its own checks), and the command line's flags and defaults come from the fields."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab import cli, config
from cnnlab.course import CourseSettings
from cnnlab.errors import UserError
from cnnlab.style import OptimizeSettings, StyleTrainSettings
from cnnlab.visualize import MaximizeSettings

ALL = [StyleTrainSettings, OptimizeSettings, MaximizeSettings, CourseSettings]


def test_yaml_then_overrides_typed(tmp_path):
    f = tmp_path / "style.yaml"
    f.write_text("content_weight: 5\nimage_size: '128'\nloss_net: vgg16\n")
    s = config.load_settings(StyleTrainSettings, f, {"content_weight": "7", "epochs": 1})
    assert s.content_weight == 7.0 and s.image_size == 128 and s.loss_net == "vgg16" and s.epochs == 1.0
    assert s.style_weight == StyleTrainSettings.style_weight  # untouched: the dataclass's default
    m = config.load_settings(MaximizeSettings, None, {"scale": "[0.8, 1.2]", "image_size": "none"})
    assert m.scale == (0.8, 1.2) and m.image_size is None


@pytest.mark.parametrize("cls, overrides, message", [
    (StyleTrainSettings, {"contnet_weight": 1}, r"unknown config key 'contnet_weight' \(did you mean 'content_weight'"),
    (OptimizeSettings, {"iterations": "many"}, "config field 'iterations' must be int, got 'many'"),
    (OptimizeSettings, {"lr": float("nan")}, "config field 'lr' must be a finite number"),
    (OptimizeSettings, {"optimizer": "adamm"}, r"'optimizer' must be one of lbfgs, adam, got 'adamm' \(did you mean"),
    (MaximizeSettings, {"param": "pixels"}, "must be one of fourier, pixel"),
    (MaximizeSettings, {"scale": [1, 2, 3]}, "config field 'scale' must be tuple"),
    (StyleTrainSettings, {"batch_size": 0}, "--batch-size must be 1 or more"),      # the class's own check
    (OptimizeSettings, {"size": 8}, "--size 16 or more"),
    (MaximizeSettings, {"octaves": 0}, "--octaves and batch_size 1 or more"),
    (CourseSettings, {"style_size": 8}, "--style-size 16 or more"),
])
def test_every_settings_class_gets_the_same_errors(cls, overrides, message):
    with pytest.raises(UserError, match=message):
        config.load_settings(cls, None, overrides)


def test_a_flag_named_error_names_the_flag():
    with pytest.raises(UserError, match="^--style-weight must be a finite number, got nan$"):
        config.load_settings(OptimizeSettings, None, {"style_weight": float("nan")},
                             labels={"style_weight": "--style-weight"})


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.sampled_from([(cls, key) for cls in ALL for key in config.keys_of(cls)]),
       st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(), st.text(max_size=8),
                 st.lists(st.one_of(st.floats(), st.text(max_size=4)), max_size=3)))
def test_any_value_gives_settings_or_a_user_error(cls_key, value):
    cls, key = cls_key
    try:
        config.load_settings(cls, None, {key: value})
    except UserError as exc:
        assert "\n" not in str(exc)


# ----------------------------------------------------------------------------------------------- the flags

COMMANDS = {  # command line (required arguments only), the settings class, flags it must keep (scripts use them)
    "stylize optimize": (["stylize", "optimize", "--content", "c.jpg", "--style", "s.jpg"], OptimizeSettings,
                         ["--content-weight", "--style-weight", "--tv-weight", "--size", "--iterations", "--optimizer",
                          "--lr", "--init", "--preserve-colors", "--snapshot-every", "--seed"]),
    "stylize train": (["stylize", "train"], StyleTrainSettings,
                      ["--style", "--content-dir", "--image-size", "--style-size", "--batch-size", "--epochs",
                       "--iterations", "--minutes", "--lr", "--content-weight", "--style-weight", "--tv-weight",
                       "--width", "--residual-blocks", "--loss-net", "--weights", "--preview-every", "--limit-images",
                       "--seed", "--precision"]),
    "visualize filters": (["visualize", "filters"], MaximizeSettings,
                          ["--steps", "--size", "--param", "--octaves", "--lr", "--tv", "--l2", "--seed"]),
    "visualize classes": (["visualize", "classes"], MaximizeSettings,
                          ["--steps", "--size", "--param", "--octaves", "--lr", "--tv", "--l2", "--seed"]),
    "course": (["course"], CourseSettings, ["--minutes", "--terrassa", "--content-dir", "--styles", "--out", "--full",
                                            "--limit-train", "--style-size", "--data-root"]),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_default_is_written_once_in_the_dataclass(name):
    """No flag carries a default of its own: given nothing, the settings are the dataclass's defaults, and the
    help shows them."""
    from cnnlab.cli._common import given_fields, settings_from

    argv, cls, flags = COMMANDS[name]
    args = cli.parse_args(argv)
    assert not given_fields(args)
    assert dataclasses.asdict(settings_from(args, cls)) == dataclasses.asdict(cls())
    assert {flag for _, flag in args.settings_flags.values()} >= set(flags)


def test_flags_take_their_type_choices_and_help_from_the_fields(capsys):
    from cnnlab.cli._common import settings_from

    args = cli.parse_args(["stylize", "train", "--style", "s.jpg", "--content-dir", "p", "--content-weight", "5",
                           "--weights", "w.safetensors", "--precision", "fp32", "preview_images=2"])
    s = settings_from(args, StyleTrainSettings)
    assert (s.content_weight, s.loss_net_weights, s.precision, s.preview_images) == (5.0, "w.safetensors", "fp32", 2)
    with pytest.raises(SystemExit):
        cli.parse_args(["stylize", "train", "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["stylize", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "loses the photo's subject under the painting" in text and "(default 3)" in text  # the field's docstring


def test_stylize_settings_from_a_file_and_overrides(tmp_path, monkeypatch, capsys):
    """--config FILE and KEY=VALUE for the stylize commands; flags win over both."""
    from cnnlab import style

    seen = {}

    class Stop(Exception):
        pass

    def fake_optimize(content, styles, out, settings, **kwargs):
        seen["s"] = settings
        raise Stop

    monkeypatch.setattr(style, "optimize", fake_optimize)
    f = tmp_path / "o.yaml"
    f.write_text("iterations: 20\nsize: 64\ninit: noise\n")
    with pytest.raises(Stop):
        cli.main(["stylize", "optimize", "--content", "c.jpg", "--style", "s.jpg", "--config", str(f), "size=96",
                  "--iterations", "10", "--style-weights", "1"])
    s = seen["s"]
    assert (s.iterations, s.size, s.init, s.style_mix) == (10, 96, "noise", [1.0])
    assert cli.main(["stylize", "optimize", "--content", "c.jpg", "--style", "s.jpg", "sise=96"]) == 2
    assert "unknown config key 'sise' (did you mean 'size'?)" in capsys.readouterr().err


def test_a_resumed_style_network_refuses_settings(tmp_path, capsys):
    assert cli.main(["stylize", "train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--lr cannot be given with --resume" in err and "style.json" in err


def test_field_help_comes_from_a_docstring_a_comment_or_metadata():
    @dataclasses.dataclass
    class Example:
        a: int = 1
        """Docstring of a."""
        b: str | None = None  # comment of b
        c: float = dataclasses.field(default=0.5, metadata={"help": "metadata of c"})
        """Not this one."""

    assert config.field_docs(Example) == {"a": "Docstring of a.", "b": "comment of b", "c": "metadata of c"}
    info = config.field_info(Example, "b")
    assert (info.type, info.optional, info.default) == (str, True, None)
