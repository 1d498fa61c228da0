"""Runs started from the page (serve.jobs): ``POST /api/train`` starts one (202; 409 while another goes), and
``GET /api/train/{job}/events`` streams its progress as Server-Sent Events. Two routers: starting a run
changes state (`router`), watching one only reads (`progress`), so a later Origin/token check on state
changes does not stand in the way of the browser's EventSource."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import StreamingResponse

from ..deps import JobsDep
from ..jobs import JobBusy

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
    return {"job": job.id, "run": job.name, "events": f"/api/train/{job.id}/events"}


@progress.get("/api/train/{job_id}/events")
def train_events(job_id: str, jobs: JobsDep):
    job = jobs.get(job_id) if JOB_ID.match(job_id) else None
    if job is None:
        raise HTTPException(404, "no such training run")
    return StreamingResponse(jobs.events(job), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
