"""The course's content weights (15, 50, 100) on cnnlab's loss scale: one linear map, for both methods.

The course weighed raw loss terms against its own style and total-variation weights; cnnlab's terms are relative
(losses.py: each layer's term divided by its target's squared norm), so the same numbers mean something else here:
at content weight 15 or 100 against cnnlab's style weight 10 the content term dominates and both images look like
the photo, and the course's lesson (15 shows clearly more of the painting than 100) disappears.

How the map was chosen. Only the ratio of the content weight to the style weight sets the balance, so the map is
linear, ``cnnlab = k · course``, with one anchor k, chosen on ONE pair, chelsea.png x starry_night.jpg
(efficientnet_lite0, 256 px, 80 and 150 L-BFGS iterations from the photo, style and TV weight 10), by the style
loss at course 15 over that at course 100 and how far each output moved from the photo (native-bf16 CPU):

- k = 1 (the course's numbers as they are): ratio 0.50-0.56, but both outputs stay the photo (mean pixel
  distance 0.02-0.035 at 15, under 0.01 at 100): the painting hardly shows even at 15;
- k = 0.01 (course 100 -> 1, cnnlab's default): ratio 0.65-0.79, both already dominated by the painting;
- k = 0.1: ratio 0.29-0.35; course 100 -> 10 keeps the photo with the painting as a texture, course 15 -> 1.5
  is dominated by the painting (its style loss near the floor lower weights reach);
- k = 0.3: a similar ratio, but course 100 -> 30 hardly leaves the photo (distance 0.01-0.02).

k = 0.1 puts the course's 100 at content weight 10, the style weight itself: content and style count alike, the
photo stays, which is the role 100 plays in the course. So the anchor is "course 100 = parity with the style
weight", k = style weight / 100, which keeps the map's meaning for another --style-weight. On 12 held-out pairs
(three other photos x four paintings) the style loss at course 15 is 0.22-0.35 of that at course 100, every
pair within the required half: benchmarks/style_content_weights.py, results in
benchmarks/results/style-content-weights-<CPU class>.md.

Why one map for both methods, not one relative to each method's default content weight (optimize 1, a style
network 3): the weights enter the same objective (optimize.StyleObjective) in both, so a course weight maps to
the same objective. The network's default is 3 because after minutes of training a network at 1 loses the
photo's subject; course 100 -> 10 is above 3 (the subject should stay), course 15 -> 1.5 below (the painting
should win), so the course's contrast should hold for the network under the same map; measured: two networks
trained 15 minutes at course 15 and 100, on six photos they never saw, have a style loss ratio of 0.27-0.49
(benchmarks/style_quality.py --ratio course-15/course-100, results in
benchmarks/results/style-quality-course-weights-15min-<CPU class>.md). Scaling by the network's default would send
course 100 to 30, where optimize hardly leaves the photo, and course 15 to 4.5, where the network's subject
already stays clear at 3: the contrast would shrink.
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
