"""The course's content weights (15, 50, 100) mapped onto cnnlab's relative loss scale (style/course_weights.py):
the map keeps the course's lesson (a lower content weight gives more of the painting), `cnnlab course` runs the
mapped weights, and pictures and summaries name both numbers."""

from __future__ import annotations

from cnnlab import style
from cnnlab.course import build
from cnnlab.data.images import read_image
from cnnlab.style import lossnet
from cnnlab.style.course_weights import (COURSE_CONTENT_WEIGHTS, content_weight_label, course_content_weight,
                                         course_weight_of)
from cnnlab.style.optimize import OptimizeSettings, stylize
from conftest import SHARED_DATA
from test_course import _settings

PHOTOS, STYLES = SHARED_DATA / "images" / "photos", SHARED_DATA / "images" / "styles"


def test_the_map_is_linear_anchored_on_parity_with_the_style_weight():
    assert [course_content_weight(w) for w in COURSE_CONTENT_WEIGHTS] == [1.5, 5.0, 10.0]
    assert course_content_weight(100) == OptimizeSettings.style_weight == style.StyleTrainSettings.style_weight
    assert course_content_weight(15, style_weight=20) == 3.0  # the ratio to the style weight is what is kept
    assert course_weight_of(5.0) == 50 and course_weight_of(3.0, style_weight=20) == 15
    assert course_weight_of(1.0) is None
    assert content_weight_label(1.5) == "content weight 1.5 (course 15)"
    assert content_weight_label(0.3) == "content weight 0.3"


def test_mapped_course_15_gives_more_of_the_painting_than_mapped_100():
    """Real efficientnet_lite0 weights, a real photo and painting: the style loss falls as the course's content
    weight does, and course 15 ends well below course 100 (the course's contrast; unmapped, 15 and 100 both keep
    the photo)."""
    net = lossnet.build("efficientnet_lite0")
    photo, painting = read_image(PHOTOS / "astronaut.png"), read_image(STYLES / "the_scream.jpg")
    style_loss = {w: stylize(net, photo, [painting], OptimizeSettings(size=112, iterations=30,
                                                                       content_weight=course_content_weight(w)))
                  .final["style_loss"] for w in COURSE_CONTENT_WEIGHTS}
    assert style_loss[15] < style_loss[50] < style_loss[100], style_loss
    assert style_loss[15] < 0.7 * style_loss[100], style_loss


def test_the_course_plan_runs_the_mapped_weights(tmp_path, fake_cifar_root):
    steps, _ = build(_settings(tmp_path, fake_cifar_root, minutes=60))
    argv = next(s for s in steps if s.name == "t5-optimize").argv
    weights = argv[argv.index("--content-weights") + 1]
    assert [float(w) for w in weights.split(",")] == [course_content_weight(w) for w in COURSE_CONTENT_WEIGHTS]
    assert "--style-weight" not in argv, "the map is anchored on the default style weight"


def test_the_summary_and_progress_name_both_scales(tmp_path, capsys):
    summary = style.optimize(PHOTOS / "chelsea.png", [STYLES / "the_scream.jpg"], tmp_path / "o",
                             OptimizeSettings(size=32, iterations=2), loss_net="efficientnet_lite0",
                             content_weights=[1.5, 10.0], progress=True)
    assert [r["label"] for r in summary["runs"]] == ["content weight 1.5 (course 15)", "content weight 10 (course 100)"]
    assert "content weight 10 (course 100): iteration" in capsys.readouterr().out
    assert (tmp_path / "o" / "content-weights.png").is_file()
