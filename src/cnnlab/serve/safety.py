"""The app's protections, each in one place: the upload limit counted while the body streams in, images
accepted by their decoded content, names that cannot leave the runs folder, and errors that are always JSON
messages without server paths or tracebacks. The routes use these; none of them is a route."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError
from .jobs import without_server_paths

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class UploadTooLarge(HTTPException):
    """Raised while the body arrives; an HTTPException so FastAPI's form parsing passes it on as 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"upload too large: over the {limit / 2**20:g} MB limit (--max-upload-mb)")


class LimitUploadSize:
    """ASGI middleware: 413 for a request body over `limit` bytes, counted as it arrives (a Content-Length
    cannot be trusted, and a chunked body has none), so an oversized upload is never read into memory."""

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
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    """Every error a JSON ``{"error": message}``: a user's mistake 400, HTTP errors with their status, a bad
    form 422 naming the fields, anything else 500 without its traceback; never the server's runs folder."""

    def message(request: Request, text: str) -> str:
        return without_server_paths(text, request.app.state.settings.runs)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": message(request, str(exc))}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": message(request, str(exc.detail))}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        fields = sorted({str(e.get("loc", ["", "?"])[-1]) for e in exc.errors()})
        return JSONResponse({"error": f"missing or invalid form field(s): {', '.join(fields)}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"},
                            status_code=500)


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


def file_inside(base: Path, relative: str) -> Path:
    """`base`/`relative` when it resolves to a file inside `base` (symlinks followed first), else 404."""
    target = (base / relative).resolve()
    if base.resolve() not in target.parents or not target.is_file():
        raise HTTPException(404, "no such file")
    return target


def decode_upload(upload: UploadFile) -> torch.Tensor:
    """The uploaded file decoded by its content, never by its name; 415 with the reason when not an image."""
    from ..data.images import decode_image

    data = upload.file.read()
    if not data:
        raise HTTPException(415, f"{upload.filename or 'the upload'} is empty; upload an image file")
    try:
        return decode_image(data, upload.filename or "the upload")
    except UserError as exc:
        raise HTTPException(415, str(exc)) from None
