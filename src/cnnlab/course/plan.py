"""The plan of `cnnlab course`: every experiment of the course's five tasks as an ordinary cnnlab command, with
its share of the time budget.

Steps that train (CIFAR-10 runs, transfer, features, fine-tuning, the style network) get a budget through
their own time-budget mode (`--minutes`), which covers their whole process (the style network's caps its
training: its setup and final files are taken off, `overhead_minutes`); the others (visualizations, the
optimized images, applying the style network) have a fixed size and an estimate of their time. The budget,
after the estimates of those, the report and a reserve (RESERVE of the minutes), goes first to each step's
minimum, then by weight. Minimums grow with the data (images to decode, extract and fine-tune on); the
estimates were measured on a 2-core AVX2 CPU, the slowest class cnnlab targets, so faster machines finish
early rather than late.

The runner shares the minutes again before every budgeted step (:func:`share`), from the minutes really left:
what earlier steps left unused (a budget run ends at about 98 % of its minutes, a fixed step before its
estimate) goes to every step still to come, the last ones included, and an overrun is taken from them.

`--full` drops the budgets: every run gets the course's own epochs (350 for the CIFAR-10 CNNs: a GPU job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

RESERVE = 0.05          # of the minutes still to share, kept back: process starts, estimates that come out short
REPORT_MINUTES = 0.3    # course.json and the --course report
START_MINUTES = 0.1     # a fixed step's process start (imports); budgeted steps count theirs in their budget
DEFAULT_STYLE = "starry_night.jpg"


@dataclass
class CourseSettings:
    """What `cnnlab course` runs. Loaded like every settings object (config.load_settings); the docstring under
    a field is also its flag's help."""

    minutes: float = 60.0
    """The whole course's budget."""
    out: str = "runs/course"
    """Course folder."""
    terrassa: str | None = None
    """The building dataset (any layout `cnnlab features --data` reads); default: the scenes dataset under the
    data root (scenes6), standing in for Terrassa Buildings 900."""
    content_dir: str | None = None
    """Photos the style network trains on; default: the building dataset's training photos."""
    styles: list[str] = field(default_factory=list)
    """Paintings; default: starry_night.jpg of the data root (images/styles). The first trains the style
    network."""
    full: bool = False
    """The course's own epochs instead of a budget (a GPU job)."""
    data_root: str | None = None
    """Data folder (default: $CNNLAB_DATA, else ~/.cache/cnnlab)."""
    limit_train: int | None = None
    """CIFAR-10 runs train on the first N images (quick looks and tests)."""
    style_size: int = 256
    """Style images' side in pixels."""

    def check(self) -> None:
        """Run by the loader after every load (the budget is checked against the plan by build())."""
        if self.limit_train is not None and self.limit_train < 1 or self.style_size < 16:
            raise UserError(f"--limit-train must be 1 or more and --style-size 16 or more, got {self.limit_train} "
                            f"and {self.style_size}")


@dataclass
class Step:
    """One cnnlab command of the plan."""

    name: str                 # its folder under OUT/runs/
    task: str                 # task1 ... task5
    reproduces: str
    argv: list[str]           # after `cnnlab`; "{minutes}" is replaced by the step's budget
    resume: list[str] | None = None  # how to continue it when killed after its first checkpoint
    weight: float = 0.0       # share of the budget (0: a fixed step)
    min_minutes: float = 0.0  # budgeted steps: the least that fits; fixed steps: the estimate
    minutes: float = 0.0      # assigned
    overhead_minutes: float = 0.0  # of `minutes`, what its process spends outside the --minutes it is given
    config_yaml: str = ""     # task-1 runs: their config, written by the runner next to the plan
    copies: list[tuple[str, str]] = field(default_factory=list)  # (source, destination) the runner copies first

    @property
    def budgeted(self) -> bool:
        return self.weight > 0

    def command(self) -> list[str]:
        given = max(0.05, self.minutes - self.overhead_minutes)
        return [a.replace("{minutes}", f"{given:.2f}") for a in self.argv]


def _data_root(settings: CourseSettings) -> Path:
    from ..data import data_root

    return data_root(settings.data_root)


def _count_images(path: Path) -> int:
    from ..data.images import images_under

    if path.is_file():  # a CSV of path,label
        return max(0, len(path.read_text(errors="replace").splitlines()) - 1)
    return len(images_under(path))


def resolve_inputs(settings: CourseSettings) -> dict[str, object]:
    """The building dataset, the content photos and the paintings, each checked before anything runs (one
    clear line naming the path and what to do)."""
    from ..data.folders import detect_layout
    from ..data.images import read_image

    root = _data_root(settings)
    terrassa = Path(settings.terrassa) if settings.terrassa else root / "scenes6"
    if not settings.terrassa and not terrassa.exists():
        raise UserError(f"no building dataset: give --terrassa PATH (class folders, the Terrassa layout or a CSV), "
                        f"or put the scenes dataset at {terrassa}")
    layout = detect_layout(terrassa)  # a UserError naming the path when it is in no known layout
    content = Path(settings.content_dir) if settings.content_dir else (
        terrassa / "train" if (terrassa / "train").is_dir() else terrassa)
    if not content.is_dir() or _count_images(content) == 0:
        raise UserError(f"--content-dir {content} holds no photos; give a folder of photos for the style network")
    styles = [Path(s) for s in settings.styles] or [root / "images" / "styles" / DEFAULT_STYLE]
    for style in styles:
        read_image(style)  # unreadable or not an image: its one-line error, before any run starts
    return {"terrassa": terrassa, "layout": layout, "stand_in": not settings.terrassa, "content": content,
            "styles": styles, "images": _count_images(terrassa)}


def build(settings: CourseSettings) -> tuple[list[Step], dict[str, object]]:
    """The steps in order (each task's runs, then what reads them) and the checked inputs."""
    from ..ablate import plan as grid_plan
    from ..config import find_config

    if not settings.full and not settings.minutes > 0:
        raise UserError(f"--minutes must be more than 0, got {settings.minutes}")
    inputs = resolve_inputs(settings)
    out = Path(settings.out)
    runs_dir, configs = out / "runs", out / "configs"
    images = int(inputs["images"])
    data = str(inputs["terrassa"])
    photos = sorted(p for p in (_data_root(settings) / "images" / "photos").glob("*.*")
                    if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))[:4]
    budget = [] if settings.full else ["--minutes", "{minutes}"]
    root = ["--data-root", settings.data_root] if settings.data_root else []
    limit = (["--limit-train", str(settings.limit_train), "--val-size",
              str(min(5000, max(100, settings.limit_train // 5)))] if settings.limit_train else [])
    cifar_min = 0.35 if settings.limit_train and settings.limit_train <= 5000 else 0.8
    steps: list[Step] = []

    # Task 1: the course's grid (configs/course-task1.yaml), each run a `cnnlab train` of its own config.
    _, _, planned = grid_plan(find_config("course-task1"), runs_dir)
    weights = {"fc-100": 2, "cnn": 4, "cnn-aug": 4, "cnn-aggressive-dropout": 4, "cnn-bn": 4, "cnn-bn-dropout-aug": 7}
    what = {"fc-100": "the 2-FC baseline", "cnn": "the 4-conv CNN with dropout",
            "cnn-aug": "+ augmentation", "cnn-aggressive-dropout": "the dropout study (its curves)",
            "cnn-bn": "+ batch norm", "cnn-bn-dropout-aug": "the full CNN (batch norm, dropout, augmentation)"}
    for item in planned:
        if item.name not in weights:  # fc-200: with budgets it would be fc-100 again; --full runs it
            if not settings.full:
                continue
        name = f"t1-{item.name}"
        config_file = configs / f"{name}.yaml"
        item.config.name, item.config.out = name, str(runs_dir / name)
        steps.append(Step(name, "task1", f"task 1: {what.get(item.name, item.name)}",
                          ["train", "--config", str(config_file), "--out", str(runs_dir / name), "--no-progress",
                           *budget, *limit, *root],
                          ["train", "--resume", str(runs_dir / name), "--no-progress", *root],
                          weight=weights.get(item.name, 4), min_minutes=cifar_min,
                          config_yaml=item.config.to_yaml()))
    full_cnn = str(runs_dir / "t1-cnn-bn-dropout-aug")
    steps.append(Step("t1-filters", "task1", "task 1: what the CNN's last conv layer's filters respond to",
                      ["visualize", "filters", "--run", full_cnn, "--layer", "features.conv4", "--steps", "64",
                       "--filters", "0-15", "--out", str(runs_dir / "t1-filters")], min_minutes=0.3))
    if photos:
        steps.append(Step("t1-gradcam", "task1", "task 1: saliency and Grad-CAM of the CNN on photos",
                          ["visualize", "attribution", "--run", full_cnn, *map(str, photos), "--methods", "saliency",
                           "gradcam", "--out", str(runs_dir / "t1-gradcam")], min_minutes=0.2))

    # Tasks 2-4: the building dataset.
    common = ["--data", data, "--no-progress", "--cache-dir", str(out / "cache")]
    extract_seconds = images / 60.0  # decoding + extracting at about 60 images/s
    steps.append(Step("t2-cifar-head", "task2", "task 2: the CIFAR CNN, frozen, with a new head",
                      ["transfer", "--from", full_cnn, *common, "--out", str(runs_dir / "t2-cifar-head"), *budget],
                      ["transfer", "--from", full_cnn, *common, "--resume", str(runs_dir / "t2-cifar-head")],
                      weight=2, min_minutes=0.3 + extract_seconds / 60))
    steps.append(Step("t2-features", "task2", "task 2: ImageNet features + softmax",
                      ["features", *common, "--out", str(runs_dir / "t2-features"), *budget],
                      ["features", *common, "--resume", str(runs_dir / "t2-features")],
                      weight=2, min_minutes=0.3 + 2 * extract_seconds / 60))
    plain = ["schedule.name=constant", "data.augment.crop_scale=1.0", "data.augment.flip=false",
             "data.augment.color_jitter=0", "transfer.early_stopping=0"]
    fine_min = 0.4 + 3 * images / 20.0 / 60  # about 20 images/s forward + backward at 224 px
    steps.append(Step("t3-finetune", "task3", "task 3: fine-tuning, low learning rate, no plateau or augmentation",
                      ["finetune", *common, "--out", str(runs_dir / "t3-finetune"), *budget, *plain],
                      ["finetune", *common, "--resume", str(runs_dir / "t3-finetune")],
                      weight=6, min_minutes=fine_min))
    tuned = str(runs_dir / "t4-finetune-plateau-aug")
    steps.append(Step("t4-finetune-plateau-aug", "task4", "task 4: fine-tuning + reduce-on-plateau + augmentation",
                      ["finetune", *common, "--out", tuned, *budget],
                      ["finetune", *common, "--resume", tuned], weight=7, min_minutes=fine_min))
    val_photos = _some_photos(Path(data), 4)
    if val_photos:
        steps.append(Step("t4-gradcam", "task4", "task 4: Grad-CAM of the fine-tuned network on building photos",
                          ["visualize", "attribution", "--run", tuned, *map(str, val_photos), "--methods",
                           "gradcam", "--out", str(runs_dir / "t4-gradcam")], min_minutes=0.3))

    # Task 5: style transfer.
    styles = [str(s) for s in inputs["styles"]]
    content_photo = str(_some_photos(Path(str(inputs["content"])), 1)[0])
    size = str(settings.style_size)
    # the course's content-weight study (15, 50, 100) on cnnlab's relative loss scale (style/course_weights.py)
    from ..style.course_weights import COURSE_CONTENT_WEIGHTS, course_content_weight

    mapped = [f"{course_content_weight(w):g}" for w in COURSE_CONTENT_WEIGHTS]
    course = ", ".join(f"{w:g}" for w in COURSE_CONTENT_WEIGHTS)
    steps.append(Step("t5-optimize", "task5", f"task 5: optimized images, course content weights {course} "
                      f"(cnnlab {', '.join(mapped)})",
                      ["stylize", "optimize", "--content", content_photo, *sum((["--style", s] for s in styles), []),
                       "--content-weights", ",".join(mapped), "--size", size, "--iterations",
                       "300" if settings.full else "80", "--snapshot-every", "20", "--loss-net", "efficientnet_lite0",
                       "--no-progress", "--out", str(runs_dir / "t5-optimize")],
                      min_minutes=0.6))  # three stylizations: 0.5 for two, and one more is about 0.1
    network = str(runs_dir / "t5-style-network")
    steps.append(Step("t5-style-network", "task5", "task 5: a fast style network and its per-epoch evolution",
                      ["stylize", "train", "--style", styles[0], "--content-dir", str(inputs["content"]),
                       "--image-size", size, "--style-size", size, "--loss-net", "efficientnet_lite0",
                       "--epochs", "2" if settings.full else "1000", "--preview-every", "50", "--no-progress",
                       "--cache-dir", str(out / "cache"), "--out", network,
                       *([] if settings.full else ["--minutes", "{minutes}"])],
                      ["stylize", "train", "--resume", network, "--cache-dir", str(out / "cache"), "--no-progress"],
                      # its --minutes caps training: the loss network, the photos and the final files come on
                      # top (0.3 minutes on a 2-core AVX2 CPU: a 30-minute cap took 30.3)
                      weight=8, min_minutes=0.6, overhead_minutes=0.3))
    shown = photos or _some_photos(Path(str(inputs["content"])), 4)
    apply_input = out / "apply-input"
    steps.append(Step("t5-apply", "task5", "task 5: the style network applied to photos",
                      ["stylize", "apply", "--model", network, "--input", str(apply_input),
                       "--out", str(runs_dir / "t5-apply"), "--no-progress"], min_minutes=0.3,
                      copies=[(str(p), str(apply_input / f"{i}-{p.name}")) for i, p in enumerate(shown)]))
    if not settings.full:
        allocate(steps, settings.minutes)
    return steps, inputs


def _some_photos(folder: Path, n: int) -> list[Path]:
    """`n` photos spread over the folder's sorted files (so over its classes), for pictures of a run."""
    from ..data.images import images_under

    found = images_under(folder)
    if not found:
        raise UserError(f"{folder} holds no photos")
    step = max(1, len(found) // n)
    return found[::step][:n]


def minimum_minutes(steps: list[Step]) -> float:
    fixed = sum(s.min_minutes + START_MINUTES for s in steps if not s.budgeted)
    return (sum(s.min_minutes for s in steps if s.budgeted) + fixed + REPORT_MINUTES) / (1 - RESERVE)


def allocate(steps: list[Step], minutes: float) -> None:
    """Each budgeted step's minimum, then the rest by weight; fixed steps keep their estimate. A budget under
    the plan's minimum is a one-line error naming the minimum, before anything runs."""
    need = minimum_minutes(steps)
    if minutes < need:
        raise UserError(f"--minutes {minutes:g} is too small for the course's plan on this data: it needs at least "
                        f"{need:.1f} minutes (each training run's minimum, the visualizations and the report); "
                        f"give --minutes {need:.0f} or more")
    share(steps, minutes)


def share(steps: list[Step], left: float, finished: list[str] | tuple[str, ...] = ()) -> None:
    """Share the `left` minutes among the steps not `finished`: fixed steps keep their estimate; budgeted steps
    get their minimum, then what remains after the report and RESERVE of it, by weight. Never less than a
    step's minimum (an overrun so far is taken from the later steps' shares, down to their minimums)."""
    todo = [s for s in steps if s.name not in finished]
    fixed = sum(s.min_minutes + START_MINUTES for s in todo if not s.budgeted)
    budgeted = [s for s in todo if s.budgeted]
    spare = left * (1 - RESERVE) - REPORT_MINUTES - fixed - sum(s.min_minutes for s in budgeted)
    total_weight = sum(s.weight for s in budgeted) or 1.0
    for s in todo:
        s.minutes = s.min_minutes + max(0.0, spare) * s.weight / total_weight if s.budgeted else s.min_minutes


def describe(steps: list[Step], settings: CourseSettings, inputs: dict[str, object]) -> str:
    """The plan as printed before anything runs: each step's budget and what it reproduces."""
    lines = [f"cnnlab course: {len(steps)} runs, " + ("the course's own epochs (--full)" if settings.full else
                                                        f"{settings.minutes:g} minutes in all"),
             f"  building dataset: {inputs['terrassa']} ({inputs['layout']} layout, {inputs['images']} images)"
             + (" standing in for Terrassa Buildings 900" if inputs["stand_in"] else "")]
    for s in steps:
        share = "" if settings.full else (f"{s.minutes:5.2f} min" if s.budgeted else f"~{s.minutes:4.2f} min")
        lines.append(f"  {s.task} {share:>9}  {s.name:<24} {s.reproduces}")
    return "\n".join(lines)
