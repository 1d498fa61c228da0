"""The course's content weights (15, 50, 100) on cnnlab's loss scale: one linear map, for both methods.

The course weighed raw loss terms against its own style and total-variation weights; cnnlab's terms are relative
(losses.py: each layer's term divided by its target's squared norm), so the same numbers mean something else here:
at content weight 15 or 100 against cnnlab's style weight 10 the content term dominates and both images look like
the photo, and the course's lesson (15 shows clearly more of the painting than 100) disappears.

How the map was chosen. Only the ratio of the content weight to the style weight matters for where the balance
lies, so the map is linear, ``cnnlab = course · k``, with one anchor k. It was measured on ONE pair, chelsea.png
x starry_night.jpg (efficientnet_lite0, 256 px, L-BFGS from the photo, style and TV weight 10), sweeping the
content weight from 0.03 to 30: the output keeps the photo (its subject and background, the painting only as a
texture) from about 10 up, and the painting clearly dominates (its colours and swirls over the background)
below about 2. k = 0.01 (course 100 -> 1, the default) puts both course weights where the painting already
dominates: their style losses differ by a third, not the course's contrast. k = 0.1 puts course 100 at content
weight 10, the style weight itself: content and style count alike, the photo stays; course 15 at 1.5, where the
painting dominates, with a style loss a quarter to a third of course 100's. So the anchor is "the course's 100
is parity with the style weight", k = style weight / 100, which also keeps the map meaningful for another
--style-weight. Held-out photos and paintings (not used to choose k) show the same ordering:
benchmarks/style_content_weights.py, results in benchmarks/results/style-content-weights-<CPU class>.md.

Why one map for both methods, not one relative to each method's default content weight (optimize 1, a style
network 3): the weights enter the same objective (optimize.StyleObjective) in both, so a course weight maps to
the same objective. The network's default is 3 because after minutes of training a network at 1 loses the
photo's subject; course 100 -> 10 is above 3 (the subject stays), course 15 -> 1.5 below (the painting wins),
so the course's contrast holds for the network under the same map. Scaling by the network's default would send
course 100 to 30, close to copying the photo, and course 15 to 4.5, where the subject already stays clear: the
contrast would shrink.
"""

from __future__ import annotations

from .optimize import OptimizeSettings

COURSE_CONTENT_WEIGHTS = (15.0, 50.0, 100.0)
"""The content weights the course compared (task 5)."""

COURSE_PARITY_WEIGHT = 100.0
"""The course content weight that maps onto parity with cnnlab's style weight (the anchor, measured above)."""

DEFAULT_STYLE_WEIGHT = OptimizeSettings.style_weight
"""cnnlab's style weight (10; the style network's default is the same)."""


def course_content_weight(course_weight: float, style_weight: float = DEFAULT_STYLE_WEIGHT) -> float:
    """The cnnlab content weight that plays the role of the course's `course_weight` against `style_weight`:
    course_weight · style_weight / 100 (15, 50, 100 -> 1.5, 5, 10 at the default style weight 10)."""
    return course_weight * style_weight / COURSE_PARITY_WEIGHT


def course_weight_of(content_weight: float, style_weight: float = DEFAULT_STYLE_WEIGHT) -> float | None:
    """The course weight (15, 50 or 100) that `content_weight` maps from at `style_weight`, else None."""
    import math

    course = content_weight * COURSE_PARITY_WEIGHT / style_weight if style_weight > 0 else math.nan
    return next((c for c in COURSE_CONTENT_WEIGHTS if math.isclose(course, c, rel_tol=1e-6)), None)


def content_weight_label(content_weight: float, style_weight: float = DEFAULT_STYLE_WEIGHT) -> str:
    """How pictures and summaries name a content weight: with the course's number beside it where it is one of
    the course's, e.g. 'content weight 1.5 (course 15)', so a grid reads in both scales."""
    course = course_weight_of(content_weight, style_weight)
    return f"content weight {content_weight:g}" + (f" (course {course:g})" if course is not None else "")
