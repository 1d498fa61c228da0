"""Short training runs started from the web page, their progress pushed to it as Server-Sent Events.

A run is an ordinary `cnnlab train` process (the same engine, run directory and time-budget mode as on the
command line), started under --runs with a preset the page offers, a budget in minutes and a number of
training images. It runs in its own process, not a thread of the server: a crash or Ctrl-C of one cannot take
the other down, and the process keeps its own thread cap. One run at a time (a second request gets 409): the
machine's cores are shared with the server's own inference.

Progress comes from the run directory itself (metrics.csv gains a row per epoch), so what the page draws is
what the run wrote; the stream ends with the summary, or with the run's own one-line error.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

PRESETS = ("demo", "course-cnn", "fast89")  # what the page offers: CIFAR-10 recipes with a budget
MINUTES = (0.1, 30.0)
TRAIN_IMAGES = (100, 50_000)
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0


class JobBusy(Exception):
    """A run is already going; one at a time."""


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


def without_server_paths(text: str, runs_root: Path) -> str:
    """A message for a web client: the server's runs folder never shown (paths relative to --runs)."""
    return text.replace(str(runs_root) + "/", "").replace(str(runs_root), "--runs")


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class TrainingJobs:
    """Starts runs (one at a time) and streams their epochs."""

    def __init__(self, runs_root: Path, logs: Path, data_root: str | None = None):
        self.runs_root, self.logs, self.data_root = Path(runs_root), Path(logs), data_root
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

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
            if any(job.state() == "running" for job in self._jobs.values()):
                raise JobBusy("a training run is already going; wait for it to end")
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            job_id = uuid.uuid4().hex
            name = f"web-{preset}-{stamp}-{job_id[:6]}"
            run = self.runs_root / name
            # Validation: a fifth as many images as training gets (100 to 5,000), carved before the limit.
            val_size = max(100, min(5000, train_images // 5))
            command = [sys.executable, "-m", "cnnlab", "train", "--config", preset, "--minutes", f"{minutes:g}",
                       "--limit-train", str(train_images), "--val-size", str(val_size), "--out", str(run),
                       "--no-progress"]
            if self.data_root:
                command.append(f"data.root={self.data_root}")
            self.logs.mkdir(parents=True, exist_ok=True)
            log = self.logs / f"{job_id}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
            job = Job(job_id, name, run, log, process)
            self._jobs[job_id] = job
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def stop_all(self) -> None:
        """Terminate running jobs (the server is going down); each keeps its last checkpoint, resumable."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.process.poll() is None:
                job.process.terminate()
                try:
                    job.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    job.process.kill()

    def error_line(self, job: Job) -> str:
        """The run's own last line (cnnlab prints one clear line on bad input), without server paths."""
        lines = [line.strip() for line in job.log.read_text(errors="replace").splitlines() if line.strip()]
        text = lines[-1] if lines else f"the run ended with exit code {job.process.returncode}"
        return without_server_paths(text, self.runs_root)

    async def events(self, job: Job) -> AsyncIterator[str]:
        """SSE: `start`, one `epoch` per row metrics.csv gains, `heartbeat` now and then, and `done` (with the
        summary's figures) or `failed` (with the run's error line)."""
        from .. import runs

        yield _sse("start", {"run": job.name})
        sent, beat = 0, time.monotonic()
        while True:
            finished = job.process.poll() is not None  # read before the rows: the last rows are never missed
            rows = [r for r in runs.RunDir(job.run).read_metrics() if isinstance(r.get("epoch"), (int, float))]
            for row in rows[sent:]:
                yield _sse("epoch", {k: row.get(k) for k in ("epoch", "train_loss", "train_accuracy", "val_loss",
                                                             "val_accuracy", "lr", "epoch_seconds")})
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
