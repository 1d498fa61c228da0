"""Runs started from the page (serve.jobs): ``POST /api/train`` starts one (202; 409 while another goes, 429
sooner than --train-interval after the last start), and ``GET /api/train/{job}/events`` streams its progress
as Server-Sent Events. Two routers: starting a run changes state (`router`, under the own-page check),
watching one only reads (`progress`), so the check does not stand in the way of the browser's EventSource."""

from __future__ import annotations

import math
import re
from typing import Annotated

from fastapi import APIRouter, Form, Header, HTTPException
from fastapi.responses import StreamingResponse

from ..deps import JobsDep
from ..jobs import JobBusy, TooSoon

JOB_ID = re.compile(r"^[0-9a-f]{32}$")

router = APIRouter()
progress = APIRouter()


@router.post("/api/train", status_code=202)
def train(jobs: JobsDep, preset: Annotated[str, Form()] = "demo", minutes: Annotated[float, Form()] = 1.0,
          train_images: Annotated[int, Form()] = 5000):
    try:
        job = jobs.start(preset, minutes, train_images)
    except JobBusy as exc:
        raise HTTPException(409, str(exc)) from None
    except TooSoon as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(math.ceil(exc.retry_after))}) from None
    return {"job": job.id, "run": job.name, "events": f"/api/train/{job.id}/events"}


@progress.get("/api/train/{job_id}/events")
def train_events(job_id: str, jobs: JobsDep, last_event_id: Annotated[str | None, Header()] = None):
    job = jobs.get(job_id) if JOB_ID.match(job_id) else None
    if job is None:
        raise HTTPException(404, "no such training run")
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() and len(last_event_id) < 7 else 0
    return StreamingResponse(jobs.events(job, after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
