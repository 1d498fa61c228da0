"""Short training runs started from the web page, their progress pushed to it as Server-Sent Events.

A run is an ordinary `cnnlab train` process (the same engine, run directory and time-budget mode as on the
command line), started under --runs with a preset the page offers, a budget in minutes and a number of
training images. It runs in its own process, not a thread of the server: a crash or Ctrl-C of one cannot take
the other down, and the process keeps its own thread cap. One run at a time (a second request gets 409): the
machine's cores are shared with the server's own inference.

Progress comes from the run directory itself (metrics.csv gains a row per epoch), so what the page draws is
what the run wrote; the stream ends with the summary, or with the run's own one-line error. Each epoch event
carries an ``id:``, so a browser that reconnects (EventSource does by itself) gets only the epochs it missed.

Page-started runs are bounded: a minimum interval between starts (429 sooner), and only the newest `keep`
``web-*`` runs stay under --runs. When the server stops, streams end and runs are interrupted (SIGINT: the
run keeps its last checkpoint, resumable), then killed after `grace` seconds, so a stop takes seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

PRESETS = ("demo", "course-cnn", "fast89")  # what the page offers: CIFAR-10 recipes with a budget
MINUTES = (0.1, 30.0)
TRAIN_IMAGES = (100, 50_000)
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0
WEB_RUN = re.compile(r"^web-[a-z0-9-]+-(\d{8}-\d{6})-[0-9a-f]{6}$")  # the names start() gives, and only those
EPOCH_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds")


class JobBusy(Exception):
    """A run is already going; one at a time."""


class TooSoon(Exception):
    """A run started less than the minimum interval ago; `retry_after` seconds to wait."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Job:
    id: str
    name: str
    run: Path
    log: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)

    def state(self) -> str:
        code = self.process.poll()
        return "running" if code is None else ("done" if code == 0 else "failed")


def _finite(value):
    """JSON has no NaN or Infinity (the page's JSON.parse rejects them): an empty or non-finite cell is null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _sse(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps({k: _finite(v) for k, v in data.items()}, allow_nan=False)}\n\n"


class TrainingJobs:
    """Starts runs (one at a time, `interval` seconds apart, the newest `keep` kept; 0 keeps all) and streams
    their epochs. `scrub` takes server paths out of what a web client reads."""

    KEEP_JOBS = 20  # finished jobs remembered (their progress streams and logs); older ones are forgotten

    def __init__(self, runs_root: Path, logs: Path, data_root: str | None = None, keep: int = 0,
                 interval: float = 0.0, grace: float = 3.0, scrub: Callable[[str], str] | None = None):
        self.runs_root, self.logs, self.data_root = Path(runs_root), Path(logs), data_root
        self.keep, self.interval, self.grace = keep, interval, grace
        self.scrub = scrub or (lambda text: text)
        self.stopping = False  # set by begin_stop (from a signal handler: a plain flag, no lock)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._last_start = -math.inf

    @staticmethod
    def check(preset: str, minutes: float, train_images: int) -> None:
        """Refuse what the page should not start, naming the field and what is allowed."""
        if preset not in PRESETS:
            raise UserError(f"field 'preset': '{preset}' is not offered here; choose one of {', '.join(PRESETS)}")
        if not MINUTES[0] <= minutes <= MINUTES[1]:
            raise UserError(f"field 'minutes': {minutes:g} is out of range; give {MINUTES[0]:g} to {MINUTES[1]:g}")
        if not TRAIN_IMAGES[0] <= train_images <= TRAIN_IMAGES[1]:
            raise UserError(f"field 'train_images': {train_images} is out of range; give {TRAIN_IMAGES[0]} to "
                            f"{TRAIN_IMAGES[1]}")

    def start(self, preset: str, minutes: float, train_images: int) -> Job:
        self.check(preset, minutes, train_images)
        with self._lock:
            if self.stopping:
                raise JobBusy("the server is shutting down")
            if self.running():
                raise JobBusy("a training run is already going; wait for it to end")
            wait = self._last_start + self.interval - time.monotonic()
            if wait > 0:
                raise TooSoon(f"a run started less than {self.interval:g} s ago; start the next in {math.ceil(wait)} s "
                              f"(--train-interval)", wait)
            self._prune()
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            job_id = uuid.uuid4().hex
            name = f"web-{preset}-{stamp}-{job_id[:6]}"
            run = self.runs_root / name
            # Validation: a fifth as many images as training gets (100 to 5,000), carved before the limit.
            val_size = max(100, min(5000, train_images // 5))
            # -P: the server's working folder is not put first on the run's import path (a stray yaml.py there
            # would shadow the library); its own session, so a stop reaches the run's workers too.
            command = [sys.executable, "-P", "-m", "cnnlab", "train", "--config", preset, "--minutes", f"{minutes:g}",
                       "--limit-train", str(train_images), "--val-size", str(val_size), "--out", str(run),
                       "--no-progress"]
            if self.data_root:
                command.append(f"data.root={self.data_root}")
            self.logs.mkdir(parents=True, exist_ok=True)
            log = self.logs / f"{job_id}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
            job = Job(job_id, name, run, log, process)
            self._jobs[job_id] = job
            self._last_start = time.monotonic()
            return job

    def running(self) -> bool:
        return any(job.process.poll() is None for job in list(self._jobs.values()))

    def _prune(self) -> None:
        """Before a start: the oldest page-started runs go, so that with the new one `keep` remain. Only
        folders named as start() names them (never a symlink, never a run still going). What the server keeps
        about finished runs (their streams, their logs) is bounded too: the newest KEEP_JOBS."""
        for job_id in list(self._jobs)[:-self.KEEP_JOBS]:
            if self._jobs[job_id].process.poll() is not None:
                self._jobs.pop(job_id).log.unlink(missing_ok=True)
        if self.keep <= 0 or not self.runs_root.is_dir():
            return
        going = {job.run.name for job in self._jobs.values() if job.process.poll() is None}
        web = sorted((m.group(1), p) for p in self.runs_root.iterdir()
                     if (m := WEB_RUN.match(p.name)) and p.is_dir() and not p.is_symlink() and p.name not in going)
        for _, old in web[:max(0, len(web) - (self.keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def begin_stop(self) -> None:
        """The server is stopping: streams end and running jobs get SIGINT (the run's Ctrl-C: it keeps its last
        checkpoint and says how to resume). Lock-free, for a signal handler."""
        self.stopping = True
        for job in list(self._jobs.values()):
            _signal_group(job.process, signal.SIGINT)

    def stop_all(self) -> None:
        """Interrupted jobs that are still going `grace` seconds later are killed, with their workers."""
        deadline = time.monotonic() + self.grace
        for job in list(self._jobs.values()):
            try:
                job.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(job.process, signal.SIGKILL)
                job.process.wait(timeout=5)

    def error_line(self, job: Job) -> str:
        """The run's own last line (cnnlab prints one clear line on bad input), without server paths."""
        lines = [line.strip() for line in job.log.read_text(errors="replace").splitlines() if line.strip()]
        text = lines[-1] if lines else f"the run ended with exit code {job.process.returncode}"
        return self.scrub(text)

    async def events(self, job: Job, after: int = 0) -> AsyncIterator[str]:
        """SSE: `start`, one `epoch` per row metrics.csv gains (its id the row's number; rows up to `after`,
        the Last-Event-ID of a reconnecting browser, are not sent again), `heartbeat` now and then, and `done`
        (with the summary's figures), `failed` (with the run's error line) or `stopped` (the server stops)."""
        from .. import runs

        yield "retry: 3000\n\n" + _sse("start", {"run": job.name})
        sent, beat = max(0, after), time.monotonic()
        while True:
            if self.stopping:
                yield _sse("stopped", {"run": job.name, "error": "the server is shutting down; the run was "
                                                                  "interrupted (resumable from its last epoch)"})
                return
            finished = job.process.poll() is not None  # read before the rows: the last rows are never missed
            rows = [r for r in runs.RunDir(job.run).read_metrics() if isinstance(r.get("epoch"), (int, float))]
            for number, row in enumerate(rows[sent:], start=sent + 1):
                yield _sse("epoch", {k: row.get(k) for k in EPOCH_FIELDS}, number)
            sent = max(sent, len(rows))
            if finished:
                break
            if time.monotonic() - beat > HEARTBEAT_SECONDS:
                beat = time.monotonic()
                yield _sse("heartbeat", {"seconds": round(time.monotonic() - job.started, 1)})
            await asyncio.sleep(POLL_SECONDS)
        if job.process.returncode == 0 and (job.run / runs.SUMMARY).is_file():
            s = runs.read_summary(job.run)
            yield _sse("done", {"run": job.name, "test_accuracy": s.get("test_accuracy"),
                                "best_val_accuracy": s.get("best_val_accuracy"), "epochs": s.get("epochs"),
                                "seconds": s.total_seconds,
                                "report": f"/runs/{job.name}/report/index.html"})
        else:
            yield _sse("failed", {"run": job.name, "error": self.error_line(job)})


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """`sig` to the run and the processes it started (its own session), when it is still going."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
