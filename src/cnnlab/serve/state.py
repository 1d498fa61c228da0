"""What a running app holds between requests, in one object on ``app.state.serve`` (not module globals, so
two apps in one process, as in the tests, share nothing): the model cache, the locks and slots, the
page-started runs, the runs list and the scratch folder of results and reports. Made when the app starts
(its lifespan), removed when it stops.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import anyio

from .jobs import TrainingJobs
from .settings import ServeSettings


class Models:
    """Models loaded on first use (classifiers for predict, style networks for stylize), each with a lock that
    serializes its use, so concurrent requests queue instead of oversubscribing the CPU. Loading one model does
    not block requests for another.

    At most `capacity` models are kept: the least recently used goes when another is loaded (a request still
    using it keeps its own reference until it is done). A build that fails keeps nothing: no model, and no
    entry in the table of builds in progress (each entry counts its waiters and goes with the last)."""

    def __init__(self, capacity: int = 3):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._loading: dict[str, list] = {}  # key -> [build lock, requests waiting on it]
        self._items: OrderedDict[str, tuple[object, threading.Lock]] = OrderedDict()
        self.loads = 0  # how many times a model was built (tests check it stays at one per model)

    def _cached(self, key: str):
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def get(self, key: str, build):
        with self._lock:
            item = self._cached(key)
            if item is not None:
                return item
            entry = self._loading.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:  # one build per key; concurrent first requests wait for it
                with self._lock:
                    item = self._cached(key)
                if item is not None:
                    return item
                item = (build(), threading.Lock())
                with self._lock:
                    self._items[key] = item
                    self.loads += 1
                    while len(self._items) > self.capacity:
                        self._items.popitem(last=False)
                return item
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0 and self._loading.get(key) is entry:
                    del self._loading[key]

    def loaded(self) -> list[str]:
        """The keys in memory, least recently used first."""
        with self._lock:
            return list(self._items)

    def loading(self) -> int:
        with self._lock:
            return len(self._loading)


class RunsIndex:
    """The runs list the page shows, each summary.json read once and again only when it changes (a page
    view costs a stat per run, not a parse)."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, int, dict | None]] = {}  # name -> (mtime_ns, size, row or None)

    def rows(self) -> list[dict]:
        from ..runs import SUMMARY

        rows, seen = [], {}
        if not self.root.is_dir():
            return rows
        for folder in sorted(self.root.iterdir()):
            try:
                stat = (folder / SUMMARY).stat()
            except OSError:  # no summary (not a run), or gone meanwhile
                continue
            key = (stat.st_mtime_ns, stat.st_size)
            with self._lock:
                cached = self._seen.get(folder.name)
            row = cached[2] if cached is not None and cached[:2] == key else _row(folder)
            seen[folder.name] = (*key, row)
            if row is not None:
                rows.append(row)
        with self._lock:
            self._seen = seen  # runs gone from the folder are forgotten
        return rows


def _row(folder: Path) -> dict | None:
    """Name, kind and one key figure of a run; None when it is damaged or of a newer cnnlab (not listed)."""
    from .. import runs

    if not folder.is_dir():
        return None
    s = runs.try_read_summary(folder)
    if s is None:
        return None
    figure = ""
    for key, label in (("test_accuracy", "test"), ("best_val_accuracy", "val"), ("accuracy", "accuracy")):
        value = s.get(key)
        if isinstance(value, (int, float)):
            figure = f"{label} {100 * value:.2f} %"
            break
    return {"name": folder.name, "kind": s.kind, "figure": figure, "style_network": s.kind == "style-network"}


class ServeState:
    """One app's state (see the module docstring). Made inside the running event loop (its slots are AnyIO
    capacity limiters)."""

    KEEP_RESULTS = 500  # result pictures kept for the page to fetch; the oldest go beyond this

    def __init__(self, settings: ServeSettings):
        from .safety import without_server_paths

        self.settings = settings
        self.scratch = Path(tempfile.mkdtemp(prefix="cnnlab-serve-"))
        self.results = self.scratch / "heatmaps"  # heatmaps and stylized pictures, served by name
        self.reports = self.scratch / "reports"  # each run's report, written on first request
        self.results.mkdir()
        self.reports.mkdir()
        self.models = Models(settings.max_models)
        self.runs_index = RunsIndex(settings.runs)
        self.jobs = TrainingJobs(settings.runs, self.scratch / "jobs", settings.data_root,
                                 keep=settings.keep_web_runs, interval=settings.train_interval,
                                 grace=settings.shutdown_seconds,
                                 scrub=lambda text: without_server_paths(text, settings))
        # Decoding and model work run in worker threads of their own, at most this many at once: requests
        # waiting for a slot wait in the event loop, holding no thread, so the page and /healthz stay quick.
        self.decode_slots = anyio.CapacityLimiter(settings.decode_slots)
        self.model_slots = anyio.CapacityLimiter(settings.model_slots)
        self.render_lock = threading.Lock()  # matplotlib's pyplot is not thread-safe
        self._report_locks: dict[str, threading.Lock] = {}
        self._report_locks_guard = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self.jobs.stopping

    def report_lock(self, run_name: str) -> threading.Lock:
        """One lock per run's report: one writer at a time, readers wait for the swap."""
        with self._report_locks_guard:
            return self._report_locks.setdefault(run_name, threading.Lock())

    def new_result(self) -> tuple[str, Path]:
        """A fresh result picture's name (a random one: results are not guessable) and where to write it."""
        name = f"{uuid.uuid4().hex}.png"
        return name, self.results / name

    def keep_recent(self) -> None:
        """The newest KEEP_RESULTS pictures stay; a file another request removed meanwhile is skipped."""
        dated = []
        for picture in self.results.glob("*.png"):
            try:
                dated.append((picture.stat().st_mtime, picture))
            except FileNotFoundError:
                continue
        for _, old in sorted(dated)[:-self.KEEP_RESULTS]:
            old.unlink(missing_ok=True)

    def status(self) -> dict:
        """What the server holds now (GET /api/status): models in memory, runs going."""
        return {"models": self.models.loaded(), "training": self.jobs.running(), "stopping": self.stopping}

    def begin_shutdown(self) -> None:
        """The server was told to stop (a signal): progress streams end, page-started runs are interrupted now,
        before the server waits for its connections. Safe in a signal handler (takes no lock)."""
        self.jobs.begin_stop()

    def close(self) -> None:
        """The server is going down: page-started runs stop (each resumable), results and reports go."""
        self.jobs.begin_stop()
        self.jobs.stop_all()
        shutil.rmtree(self.scratch, ignore_errors=True)
