"""What a running app holds between requests, in one object on ``app.state.serve`` (not module globals, so
two apps in one process, as in the tests, share nothing): the model cache, the locks, the page-started runs
and the scratch folder of results and reports. Made when the app starts (its lifespan), removed when it stops.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from .jobs import TrainingJobs
from .settings import ServeSettings


class Models:
    """Models loaded once per name (classifiers for predict, style networks for stylize), each with a lock that
    serializes its use, so concurrent requests queue instead of oversubscribing the CPU. Loading one model does
    not block requests for another."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._items: dict[str, tuple[object, threading.Lock]] = {}
        self.loads = 0  # how many times a model was built (tests check it stays at one per model)

    def get(self, key: str, build):
        with self._lock:
            if key in self._items:
                return self._items[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one build per key; concurrent first requests wait for it
            with self._lock:
                if key in self._items:
                    return self._items[key]
            item = (build(), threading.Lock())
            with self._lock:
                self._items[key] = item
                self.loads += 1
            return item


class ServeState:
    """One app's state (see the module docstring)."""

    KEEP_RESULTS = 500  # result pictures kept for the page to fetch; the oldest go beyond this

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.scratch = Path(tempfile.mkdtemp(prefix="cnnlab-serve-"))
        self.results = self.scratch / "heatmaps"  # heatmaps and stylized pictures, served by name
        self.reports = self.scratch / "reports"  # each run's report, written on first request
        self.results.mkdir()
        self.reports.mkdir()
        self.models = Models()
        self.jobs = TrainingJobs(settings.runs, self.scratch / "jobs", settings.data_root)
        self.render_lock = threading.Lock()  # matplotlib's pyplot is not thread-safe
        self._report_locks: dict[str, threading.Lock] = {}
        self._report_locks_guard = threading.Lock()

    def report_lock(self, run_name: str) -> threading.Lock:
        """One lock per run's report: one writer at a time, readers wait for the swap."""
        with self._report_locks_guard:
            return self._report_locks.setdefault(run_name, threading.Lock())

    def new_result(self) -> tuple[str, Path]:
        """A fresh result picture's name (a random one: results are not guessable) and where to write it."""
        name = f"{uuid.uuid4().hex}.png"
        return name, self.results / name

    def keep_recent(self) -> None:
        files = sorted(self.results.glob("*.png"), key=lambda f: f.stat().st_mtime)
        for old in files[:-self.KEEP_RESULTS]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        """The server is going down: page-started runs stop (each resumable), results and reports go."""
        self.jobs.stop_all()
        shutil.rmtree(self.scratch, ignore_errors=True)
