"""Looking inside networks: image reading, ImageNet predictions, attribution and activation maximization."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import models, visualize
from cnnlab.config import OptimConfig, ScheduleConfig
from cnnlab.data.images import read_image
from cnnlab.engine import Trainer
from cnnlab.engine.optim import LrSchedule, build_optimizer
from cnnlab.errors import UserError
from cnnlab.models import Preprocess
from cnnlab.visualize.attribution import Attributor, mass_inside
from conftest import SHARED_DATA
from test_bad_input import assert_one_line_error as assert_error
from test_bad_input import run as run_cli
from test_cli import assert_one_line_error, cnnlab

PHOTOS = SHARED_DATA / "images" / "photos"
CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


# ------------------------------------------------------------------------------------------- image files


def test_reads_every_mode_as_rgb_uint8(tmp_path):
    grey = Image.fromarray(np.full((10, 12), 77, np.uint8), "L")
    grey.save(tmp_path / "grey.png")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "rgba.png")
    pal = Image.new("P", (6, 6))
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "pal.png")
    Image.fromarray(np.full((5, 5), 65535, np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGB", (9, 7), (10, 20, 30)).save(tmp_path / "x.bmp")
    Image.new("RGB", (9, 7), (200, 100, 50)).save(tmp_path / "x.jpg", quality=95)
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")

    g = read_image(tmp_path / "grey.png")
    assert g.shape == (3, 10, 12) and g.dtype == torch.uint8 and (g == 77).all()
    a = read_image(tmp_path / "rgba.png")
    assert a[:, 3, 3].tolist() == [255, 255, 255]  # transparency composited on white
    assert a[:, 0, 0].tolist() == [0, 0, 255]
    p = read_image(tmp_path / "pal.png")
    assert p[:, 1, 1].tolist() == [0, 200, 0]
    d = read_image(tmp_path / "deep.png")
    assert (d == 255).all()  # 16-bit full scale -> 255
    assert read_image(tmp_path / "x.bmp")[:, 0, 0].tolist() == [10, 20, 30]
    assert read_image(tmp_path / "x.jpg").shape == (3, 7, 9)
    assert (read_image(tmp_path / "cmyk.jpg") > 250).all()  # CMYK white
    cam = read_image(PHOTOS / "camera.png")  # a real greyscale photo
    assert cam.shape == (3, 512, 512) and torch.equal(cam[0], cam[2])


def test_bad_image_files_name_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"notes.txt is not an image file"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(UserError, match=r"missing.png does not exist"):
        read_image(tmp_path / "missing.png")
    good = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(UserError, match=r"truncated.png"):
        read_image(tmp_path / "truncated.png")


# ------------------------------------------------------------------------------------------- EfficientNet-Lite0


@pytest.fixture(scope="module")
def lite0():
    return visualize.load_subject(model="efficientnet_lite0")


def test_lite0_is_registered_with_its_preprocessing(lite0):
    assert lite0.preprocess.mean == (0.5, 0.5, 0.5) and lite0.preprocess.std == (0.5, 0.5, 0.5)
    assert len(lite0.class_names) == 1000 and lite0.class_names[285] == "Egyptian cat"
    x = lite0.preprocess(torch.full((3, 300, 400), 255, dtype=torch.uint8))
    assert x.shape == (3, 224, 298) and torch.allclose(x, torch.ones(()))  # white -> +1


def test_lite0_predicts_real_photos_and_gradcam_finds_the_cat(lite0, tmp_path):
    info = visualize.attribution(lite0, [PHOTOS / "chelsea.png", PHOTOS / "coffee.png"], tmp_path,
                                 methods=["gradcam", "eigencam"])
    preds = json.loads((tmp_path / "predictions.json").read_text())
    assert len(preds) == 2 and all(len(p) == 5 for p in preds)
    assert set(preds[0][0]) == {"class_index", "class_name", "probability"}
    assert CAT_CLASSES & {p["class_name"] for p in preds[0]}
    assert {"espresso", "cup", "coffee mug"} & {p["class_name"] for p in preds[1]}
    # probabilities (a softmax over all 1000 classes), not logits: they equal the model's own softmax top 5
    x = lite0.preprocess(read_image(PHOTOS / "chelsea.png")).unsqueeze(0)
    with torch.no_grad():
        expected = lite0.model(x).softmax(-1)[0].topk(5)
    assert [p["class_index"] for p in preds[0]] == expected.indices.tolist()
    assert [p["probability"] for p in preds[0]] == pytest.approx(expected.values.tolist(), abs=1e-4)
    assert 0 < sum(p["probability"] for p in preds[0]) <= 1 + 1e-6
    assert info["layer"] == "_conv_head"
    assert (tmp_path / "000_chelsea_gradcam.png").is_file() and (tmp_path / "000_chelsea_panel.png").is_file()

    # Grad-CAM of the top cat class: the heat lies mostly on the cat, not the background to its right.
    image = read_image(PHOTOS / "chelsea.png")  # 451 x 300; resized to 337 x 224 for the model
    x = lite0.preprocess(image).unsqueeze(0)
    scale = x.shape[-1] / image.shape[-1]
    cat_box = tuple(int(round(v * scale)) for v in (20, 0, 390, 300))  # head and chest, original pixels
    target = torch.tensor([max(range(1000), key=lambda c: lite0.model(x)[0, c].item()
                               if lite0.class_names[c] in CAT_CLASSES else -1e9)])
    with Attributor(lite0.model, lite0.module("_conv_head"), ["gradcam"]) as attr:
        heat = attr(x, target)["gradcam"]
    inside = mass_inside(heat, cat_box).item()
    box_area = (cat_box[2] - cat_box[0]) * (cat_box[3] - cat_box[1]) / (x.shape[-1] * x.shape[-2])
    assert inside > 0.9 and inside > box_area + 0.05, (inside, box_area)


# ------------------------------------------------------------------------------------------- synthetic task

REGION = (2, 2, 14, 14)  # x0, y0, x1, y1: the only place that tells the classes apart


def region_task(n: int, seed: int):
    """Noise images with stripes everywhere; only the stripes' orientation inside REGION gives the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.3
    rows = torch.arange(32).view(32, 1).expand(32, 32)
    cols = torch.arange(32).view(1, 32).expand(32, 32)
    stripes = [((rows // 2) % 2).float(), ((cols // 2) % 2).float()]  # horizontal, vertical
    distract = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        x[i] += 0.5 * stripes[int(distract[i])]  # uninformative stripes over the whole image
        x0, y0, x1, y1 = REGION
        x[i, :, y0:y1, x0:x1] = 0.15 + 0.7 * stripes[int(y[i])][y0:y1, x0:x1]
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def region_model():
    torch.manual_seed(0)
    model = models.create("cnn4", num_classes=2, widths=[16, 32], fc_width=64, batchnorm=True, dropout="none")
    x, y = region_task(1200, seed=1)
    x = (x - 0.5) / 0.25
    optimizer = build_optimizer(model, OptimConfig(name="adam", lr=3e-3))
    schedule = LrSchedule(optimizer, ScheduleConfig(), steps_per_epoch=24, total_steps=24 * 6)
    trainer = Trainer(model, optimizer, schedule, device=torch.device("cpu"))

    class Batches:
        labels = y

        def __len__(self):
            return 24

        def epoch(self, e=0, max_batches=None):
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(e))
            for b in range(24):
                i = order[b * 50:(b + 1) * 50]
                yield x[i], y[i]

    trainer.fit(Batches(), None, [24] * 6)
    xt, yt = region_task(200, seed=2)
    with torch.no_grad():
        acc = (model.eval()((xt - 0.5) / 0.25).argmax(1) == yt).float().mean().item()
    assert acc > 0.95, acc  # the model solved the task, so it must be looking at the region
    subject = visualize.Subject("region-cnn", model.eval(),
                                Preprocess(32, 32, (0.5,) * 3, (0.25,) * 3, fixed_size=True), ["h", "v"])
    return subject, xt, yt


def test_saliency_and_gradcam_concentrate_on_the_informative_region(region_model):
    subject, x, y = region_model
    xn = (x[:32] - 0.5) / 0.25
    with Attributor(subject.model, subject.module("features.conv4"), ["saliency", "smoothgrad", "gradcam"]) as attr:
        maps = attr(xn, y[:32])
    area = (REGION[2] - REGION[0]) * (REGION[3] - REGION[1]) / 32 ** 2  # 14 % of the image
    for method, least in (("saliency", 0.35), ("smoothgrad", 0.35), ("gradcam", 0.5)):
        inside = mass_inside(maps[method], REGION).mean().item()
        assert inside > least and inside > 2.5 * area, (method, inside)


def test_activation_maximization_raises_activation_and_differs_per_filter(region_model, tmp_path):
    subject, _, _ = region_model
    settings = visualize.MaximizeSettings(steps=256, seed=0)
    info = visualize.filters(subject, "features.relu3", list(range(8)), tmp_path, settings)
    start, end = np.array(info["initial_activation"]), np.array(info["final_activation"])
    gain = end / np.maximum(start, 1e-6)  # over the starting noise image, post-ReLU (so >= 0)
    assert np.median(gain) >= 5 and gain.min() >= 3, (start, end)
    images = np.load(tmp_path / "filters_features_relu3.npy")
    assert images.shape == (8, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    flat = images.reshape(8, -1)
    corr = np.corrcoef(flat - flat.mean(1, keepdims=True))
    assert corr[~np.eye(8, dtype=bool)].max() < 0.95  # different filters, different images
    assert (tmp_path / "filters_features_relu3.png").stat().st_size > 2000
    classes = visualize.classes(subject, ["h", 1], tmp_path, visualize.MaximizeSettings(steps=64))
    assert all(f > s for s, f in zip(classes["initial_activation"], classes["final_activation"]))


def test_bad_requests_are_one_line_errors(region_model, lite0, tmp_path):
    subject, _, _ = region_model
    with pytest.raises(UserError, match=r"unknown layer 'features.conv9'.*conv layers: features.conv1, "):
        subject.module("features.conv9")
    with pytest.raises(UserError, match=r"class index 7 is out of range .* 2 classes"):
        subject.class_index(7)
    with pytest.raises(UserError, match=r"filter 40 is out of range: layer 'features.conv1' has 16"):
        visualize.filters(subject, "features.conv1", [0, 40], tmp_path)
    mlp = visualize.Subject("mlp", models.create("mlp", hidden=8).eval(),
                            Preprocess(32, 32, (0.5,) * 3, (0.25,) * 3, fixed_size=True), [str(i) for i in range(10)])
    with pytest.raises(UserError, match=r"no convolutional layer with a spatial output"):
        visualize.attribution(mlp, [PHOTOS / "cat.bmp"], tmp_path, methods=["gradcam"])
    assert visualize.attribution(mlp, [PHOTOS / "cat.bmp"], tmp_path, methods=["saliency"])["images"]
    with pytest.raises(UserError, match=r"unknown class 'zebraa'"):
        visualize.attribution(lite0, [PHOTOS / "cat.bmp"], tmp_path, methods=["gradcam"], target="zebraa")


# ------------------------------------------------------------------------------------------- CLI


def test_cli_attribution_and_filters(tmp_path, trained_classifier, capsys):
    out = tmp_path / "attr"
    proc = cnnlab("visualize", "attribution", PHOTOS / "chelsea.png", PHOTOS / "hot_dog.jpg", "--model",
                  "efficientnet_lite0", "--methods", "gradcam", "saliency", "--out", out)
    assert proc.returncode == 0, proc.stderr
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 2 and preds[1][0]["class_name"] == "hotdog"
    for top5 in preds:  # probabilities: descending, positive, at most 1 in total
        probs = [p["probability"] for p in top5]
        assert probs == sorted(probs, reverse=True) and probs[-1] > 0 and sum(probs) <= 1 + 1e-6
    assert list(out.glob("*.png"))

    run = trained_classifier  # a finished cnn4 run (read only)
    # the CLI in this process from here on (torch imported once); bad requests are one line each
    code, _, err = run_cli(["visualize", "filters", "--run", run, "--layer", "features.conv2", "--filters", "0-7",
                            "--steps", "16", "--out", tmp_path / "filters"], capsys)
    assert code == 0, err
    assert (tmp_path / "filters" / "filters_features_conv2.png").is_file()
    for argv, fragments in (
            (["filters", "--run", run, "--layer", "features.conv5", "--out", tmp_path / "f2"],
             ("unknown layer 'features.conv5'", "features.conv4")),
            (["attribution", run / "config.yaml", "--run", run, "--out", tmp_path / "a"],
             ("config.yaml is not an image file",)),
            (["classes", "--run", run, "--classes", "12", "--out", tmp_path / "c"],
             ("class index 12 is out of range",))):
        code, _, err = run_cli(["visualize", *argv], capsys)
        assert_error(code, err, *fragments)


def test_octaves_and_pixel_parametrization_on_a_fully_convolutional_net(tmp_path):
    """Large inputs: optimize small, upscale, continue; works for both parametrizations."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 5, padding=2),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    subject = visualize.Subject("tiny-fcn", net.eval(), Preprocess(64, 64, (0.5,) * 3, (0.25,) * 3), ["a", "b", "c"])
    for param in ("fourier", "pixel"):
        settings = visualize.MaximizeSettings(steps=40, image_size=64, octaves=3, param=param, seed=1)
        result = visualize.maximize(subject, "3", [0, 5], settings)
        assert result.images.shape == (2, 3, 64, 64)
        assert all(f > 2 * max(s, 1e-3) for s, f in zip(result.initial_activation, result.final_activation))


def test_the_l1_total_variation_of_activation_maximization_by_hand():
    from cnnlab.style.losses import total_variation_l2
    from cnnlab.visualize.maximize import total_variation_l1

    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # vertical differences 2, 3 -> mean 2.5; horizontal 1, 2 -> 1.5; per image
    assert total_variation_l1(x).tolist() == [4.0]
    assert total_variation_l2(x).item() == 9.0  # the squared one of style transfer: another number
    assert total_variation_l1(torch.stack([x[0], 2 * x[0]])).tolist() == [4.0, 8.0]
