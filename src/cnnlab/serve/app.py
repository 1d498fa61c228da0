"""The web app: browse runs and their reports, classify an uploaded photo (top-5 + Grad-CAM), stylize one.

Endpoints:
- ``GET /`` the page; ``GET /healthz`` 200 when up;
- ``GET /api/runs`` the run directories under --runs (name, kind, key figure);
- ``GET /runs/{name}/report/{file}`` a run's HTML report (written on first request, then cached);
- ``POST /api/predict`` multipart ``image`` (+ optional ``model``: a registered ImageNet model, default
  efficientnet_lite0, or a classifier run's name) -> ``{"predictions": [{"class_index", "class_name",
  "probability"}, ... top-5], "heatmap": URL of a Grad-CAM PNG}``;
- ``POST /api/stylize`` multipart ``image`` + ``network`` (a style-network run's name) -> ``{"image": URL}``;
- ``POST /api/train`` form ``preset``, ``minutes``, ``train_images`` -> 202 ``{"job", "run", "events": URL}``
  (409 while another run goes); ``GET /api/train/{job}/events`` its progress as Server-Sent Events (serve.jobs).

Safety, by design rather than by hope: it binds to 127.0.0.1 unless told otherwise; uploads over
--max-upload-mb are refused with 413 before they are read into memory (the request body is counted as it
arrives, with or without a Content-Length); images are accepted by decoding their content (anything else:
415 with the reason), never by their extension; run and file names are resolved and must stay inside
--runs (``..``, encoded ``%2e%2e``, absolute paths and symlinks pointing outside give 404); errors are JSON
messages, never tracebacks. Each model is loaded once and shared; one lock per model keeps concurrent
requests from oversubscribing the CPU (they queue and are all answered).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from ..errors import UserError

HEATMAP_NAME = re.compile(r"^[0-9a-f]{32}\.png$")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


MAX_STYLIZE_SIDE = 1024  # uploads are stylized at most this large: the decoder accepts ~89 M pixels, memory not


class UploadTooLarge(HTTPException):
    """Raised while the body arrives; an HTTPException so FastAPI's form parsing passes it on as 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"upload too large: over the {limit / 2**20:g} MB limit (--max-upload-mb)")


class LimitUploadSize:
    """ASGI middleware: 413 for a request body over `limit` bytes, counted as it arrives."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _json(send, 413, UploadTooLarge(self.limit).detail)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise UploadTooLarge(self.limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except UploadTooLarge as exc:  # raised outside a route's error handling (no form parsing involved)
            if not started:
                await _json(send, 413, exc.detail)


async def _json(send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Models:
    """Models loaded once per name (classifiers for predict, style networks for stylize), each with a lock that
    serializes its use. Loading one model does not block requests for another."""

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


def child_run(root: Path, name: str) -> Path | None:
    """The run folder `name` directly under `root`, or None for anything that would leave `root` (``..``,
    separators, absolute paths, a symlink pointing elsewhere)."""
    if not RUN_NAME.match(name) or ".." in name:
        return None
    path = (root / name).resolve()
    return path if path.parent == root.resolve() and path.is_dir() else None


def safe_run_dir(root: Path, name: str) -> Path:
    """child_run, or 404."""
    path = child_run(root, name)
    if path is None:
        raise HTTPException(404, "no such run")
    return path


def _inside(base: Path, relative: str) -> Path:
    target = (base / relative).resolve()
    if base.resolve() not in target.parents or not target.is_file():
        raise HTTPException(404, "no such file")
    return target


def create_app(runs: str | Path = "runs", max_upload_mb: float = 10, device: str = "cpu",
               default_model: str = "efficientnet_lite0", allowed_hosts: list[str] | None = None,
               data_root: str | None = None):
    """The FastAPI application (see the module docstring). `allowed_hosts`: the Host headers answered (the CLI
    passes localhost's names when bound to localhost, against DNS rebinding); None answers any. `data_root`:
    where runs started from the page find CIFAR-10 (default: the usual data root)."""
    from contextlib import asynccontextmanager

    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    runs_root = Path(runs).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="cnnlab-serve-"))
    (scratch / "heatmaps").mkdir()
    (scratch / "reports").mkdir()
    models = Models()
    from .jobs import TrainingJobs, without_server_paths

    jobs = TrainingJobs(runs_root, scratch / "jobs", data_root)
    render_lock = threading.Lock()  # matplotlib's pyplot is not thread-safe
    report_locks: dict[str, threading.Lock] = {}
    report_locks_guard = threading.Lock()

    @asynccontextmanager
    async def lifespan(_app):
        yield
        jobs.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)  # heatmaps and reports live only as long as the server

    app = FastAPI(title="cnnlab", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(LimitUploadSize, limit=int(max_upload_mb * 2**20))
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.state.models = models
    app.state.jobs = jobs
    app.state.scratch = scratch

    def message(text: str) -> str:
        return without_server_paths(text, runs_root)

    @app.exception_handler(UserError)
    async def user_error(_request: Request, exc: UserError):
        return JSONResponse({"error": message(str(exc))}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": message(str(exc.detail))}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        fields = sorted({str(e.get("loc", ["", "?"])[-1]) for e in exc.errors()})
        return JSONResponse({"error": f"missing or invalid form field(s): {', '.join(fields)}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"},
                            status_code=500)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    def page():
        import jinja2

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                                 autoescape=True)
        from .jobs import PRESETS

        return env.get_template("index.html.j2").render(runs=list_runs(runs_root), default_model=default_model,
                                                         max_upload_mb=max_upload_mb, presets=PRESETS)

    @app.get("/api/runs")
    def api_runs():
        return {"runs": list_runs(runs_root)}

    @app.get("/runs/{name}/report/{file:path}")
    def report(name: str, file: str):
        run = safe_run_dir(runs_root, name)
        out = scratch / "reports" / name
        with report_locks_guard:
            lock = report_locks.setdefault(name, threading.Lock())
        with lock:  # one writer per run; written aside, then swapped in whole
            summary = run / "summary.json"
            stale = not (out / "index.html").is_file() or (
                summary.is_file() and summary.stat().st_mtime > (out / "index.html").stat().st_mtime)
            if stale:
                from ..report.html import write_report

                fresh = scratch / "reports" / f".{name}-{uuid.uuid4().hex}"
                write_report([run], fresh, title=f"cnnlab: {name}", show_paths=False)
                old = scratch / "reports" / f".{name}-old-{uuid.uuid4().hex}"
                if out.exists():
                    out.rename(old)
                fresh.rename(out)
                shutil.rmtree(old, ignore_errors=True)
        return FileResponse(_inside(out, file or "index.html"))

    @app.get("/api/heatmaps/{name}")
    def heatmap(name: str):
        if not HEATMAP_NAME.match(name):
            raise HTTPException(404, "no such heatmap")
        return FileResponse(_inside(scratch / "heatmaps", name), media_type="image/png")

    def keep_recent(folder: Path, keep: int = 500) -> None:
        """Results are kept for the page to fetch; the oldest go once there are more than `keep`."""
        files = sorted(folder.glob("*.png"), key=lambda f: f.stat().st_mtime)
        for old in files[:-keep]:
            old.unlink(missing_ok=True)

    @app.post("/api/predict")
    def predict(image: UploadFile = File(...), model: str = Form(default_model)):
        picture = _upload_image(image)
        subject, lock = models.get(f"classifier:{model}", lambda: _load_subject(runs_root, model, device))
        with lock:
            predictions, heat, shown = _classify(subject, picture)
        name = f"{uuid.uuid4().hex}.png"
        from ..visualize import render

        with render_lock:
            render.heatmap(shown, heat, scratch / "heatmaps" / name, f"Grad-CAM: {predictions[0]['class_name']}")
        keep_recent(scratch / "heatmaps")
        return {"predictions": predictions, "heatmap": f"/api/heatmaps/{name}", "model": model}

    @app.post("/api/stylize")
    def stylize(image: UploadFile = File(...), network: str = Form(...)):
        from ..data.images import save_png, to_uint8
        from ..style.optimize import resize_longest

        picture = _upload_image(image)
        if max(picture.shape[1:]) > MAX_STYLIZE_SIDE:  # memory grows with the pixels, not the upload's bytes
            picture = to_uint8(resize_longest(picture, MAX_STYLIZE_SIDE))
        run = safe_run_dir(runs_root, network)
        stylizer, lock = models.get(f"style:{network}", lambda: _load_stylizer(run, device))
        with lock:
            styled = stylizer(picture.unsqueeze(0))[0]
        name = f"{uuid.uuid4().hex}.png"
        save_png(styled, scratch / "heatmaps" / name)
        keep_recent(scratch / "heatmaps")
        return {"image": f"/api/heatmaps/{name}", "network": network, "size": list(styled.shape[1:])}

    @app.post("/api/train", status_code=202)
    def train(preset: str = Form("demo"), minutes: float = Form(1.0), train_images: int = Form(5000)):
        from .jobs import JobBusy

        try:
            job = jobs.start(preset, minutes, train_images)
        except JobBusy as exc:
            raise HTTPException(409, str(exc)) from None
        return {"job": job.id, "run": job.name, "events": f"/api/train/{job.id}/events"}

    @app.get("/api/train/{job_id}/events")
    def train_events(job_id: str):
        from fastapi.responses import StreamingResponse

        job = jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise HTTPException(404, "no such training run")
        return StreamingResponse(jobs.events(job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


def _upload_image(upload) -> torch.Tensor:
    """The uploaded file decoded by its content; 415 with the reason when it is not an image."""
    from ..data.images import decode_image

    data = upload.file.read()
    if not data:
        raise HTTPException(415, f"{upload.filename or 'the upload'} is empty; upload an image file")
    try:
        return decode_image(data, upload.filename or "the upload")
    except UserError as exc:
        raise HTTPException(415, str(exc)) from None


def _load_subject(runs_root: Path, model: str, device: str):
    """A registered ImageNet model by name, or a classifier run under --runs by its folder name."""
    from ..models.registry import list_models
    from ..visualize import load_subject

    if model in list_models(task="imagenet"):
        subject = load_subject(model=model)
    else:
        run = child_run(runs_root, model)
        if run is None or not (run / "best.safetensors").is_file():
            raise UserError(f"unknown model '{model}': name an ImageNet model ({', '.join(list_models('imagenet'))}) "
                            f"or a classifier run under --runs")
        subject = load_subject(run=str(run))
    subject.model.to(device).eval()
    return subject


def _classify(subject, picture: torch.Tensor):
    """Top-5 and a Grad-CAM map of the top class for one image."""
    from ..engine.metrics import topk
    from ..visualize.attribution import Attributor
    from ..visualize.subject import default_cam_layer

    x = subject.preprocess(picture).unsqueeze(0)
    with torch.no_grad():
        logits = subject.model(x)
    probs, top = topk(logits, min(5, logits.shape[1]))
    layer = default_cam_layer(subject, x)
    with Attributor(subject.model, subject.module(layer), ["gradcam"]) as attributor:
        heat = attributor(x, top[:, 0])["gradcam"][0]
    predictions = [{"class_index": int(c), "class_name": subject.class_names[int(c)], "probability": float(p)}
                   for p, c in zip(probs[0], top[0])]
    return predictions, heat, subject.preprocess.denormalize(x[0])


def _load_stylizer(run: Path, device: str):
    from ..engine.device import resolve_execution
    from ..style.apply import Stylizer
    from ..style.train import load_network

    model, _ = load_network(run, device)
    execution = resolve_execution(torch.device(device))
    return Stylizer(model, torch.device(device), execution.precision, execution.channels_last)


def list_runs(root: Path) -> list[dict]:
    """The run directories directly under `root`: name, kind and one key figure."""
    import json

    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "summary.json").is_file()):
        try:
            s = json.loads((folder / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        from ..runs import run_kind

        kind = run_kind(s)
        figure = ""
        for key, label in (("test_accuracy", "test"), ("best_val_accuracy", "val")):
            if isinstance(s.get(key), (int, float)):
                figure = f"{label} {100 * s[key]:.2f} %"
                break
        out.append({"name": folder.name, "kind": kind, "figure": figure,
                    "style_network": s.get("kind") == "style_network"})
    return out
