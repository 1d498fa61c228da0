"""The app's protections, each in one place: the upload limit counted while the body streams in, images
accepted by their decoded content and decoded within a pixel budget, names that cannot leave the runs folder,
a run shown on the web only through a copy without links and server paths, and errors that are always JSON
messages without server paths or tracebacks. The routes use these; none of them is a route. (Who may ask at
all, Host, token and Origin, is serve/access.py.)"""

from __future__ import annotations

import html
import io
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError
from .access import send_json
from .settings import ServeSettings

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
            return await send_json(send, 413, UploadTooLarge(self.limit).detail)
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
                await send_json(send, 413, exc.detail)


def server_paths(settings: ServeSettings) -> list[tuple[str, str]]:
    """(server path, what a web client sees instead), longest first: the runs folder (run paths become run
    names), the data root, the temporary folder and the home folder."""
    pairs = [(str(settings.runs) + os.sep, ""), (str(settings.runs), "--runs")]
    data = settings.data_root or os.environ.get("CNNLAB_DATA")
    if data:
        pairs.append((str(Path(data).expanduser().resolve()), "<data root>"))
    pairs.append((str(Path(tempfile.gettempdir()).resolve()), "<tmp>"))
    home = str(Path.home())
    if len(home) > 1:
        pairs.append((home, "~"))
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def without_server_paths(text: str, settings: ServeSettings) -> str:
    """A message or page for a web client: none of the server's own folders shown (see server_paths)."""
    for path, shown in server_paths(settings):
        text = text.replace(path, shown)
    return text


def install_error_handlers(app: FastAPI) -> None:
    """Every error a JSON ``{"error": message}``: a user's mistake 400, HTTP errors with their status, a bad
    form 422 naming the fields, anything else 500 without its traceback; never the server's runs folder."""

    def message(request: Request, text: str) -> str:
        return without_server_paths(text, request.app.state.settings)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": message(request, str(exc))}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": message(request, str(exc.detail))}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

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


def decode_upload(data: bytes, name: str, max_pixels: int, side: int) -> torch.Tensor:
    """An upload's bytes decoded by their content, never by their name, within a pixel budget: RGB uint8
    [3, H, W] with its longer side at most about 2 x `side` (what the models use of it).

    The header's size is checked before any pixel is decoded; a JPEG is decoded at a reduced scale (Pillow's
    draft: 1/2 to 1/8, at no cost) and that size must fit `max_pixels`, other formats their full size; the
    picture is then reduced by a whole factor before its mode is converted, so a 25 MP upload costs about
    100 MB once, not the gigabytes of RGBA compositing and float copies at full size. 413 when too large,
    415 with the reason when it is no image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from ..data.images import MAX_PIXELS, _to_rgb_array  # one mode conversion for every image cnnlab reads

    if not data:
        raise HTTPException(415, f"{name} is empty; upload an image file")
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: the checks below say it as an error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise _too_large(name, width, height, max_pixels)
                if max(width, height) > side:
                    scale = side / max(width, height)
                    img.draft(img.mode, (max(1, int(width * scale)), max(1, int(height * scale))))
                if img.width * img.height > max_pixels:
                    raise _too_large(name, width, height, max_pixels)
                img.load()
                img = _reduced(img, side)
                img = ImageOps.exif_transpose(img)
                array = _to_rgb_array(img)
    except UnidentifiedImageError:
        raise HTTPException(415, f"{name} is not an image file that can be read (JPEG, PNG, BMP, GIF, TIFF, "
                                 f"WebP)") from None
    except Image.DecompressionBombError:
        raise _too_large(name, 0, 0, max_pixels) from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's truncated, damaged and unsupported files
        raise HTTPException(415, f"cannot read image {name} ({exc}); the file may be truncated or damaged") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _too_large(name: str, width: int, height: int, max_pixels: int) -> HTTPException:
    size = f" ({width:,} x {height:,} pixels)" if width else ""
    return HTTPException(413, f"{name} is too large to decode here{size}: the limit is {max_pixels / 1e6:g} "
                              f"million pixels (--max-megapixels); resize it first")


def _reduced(img, side: int):
    """`img` reduced by the largest whole factor that keeps its longer side at least `side` (box filter, on
    the decoded mode: before any conversion multiplies its bytes). Modes Pillow cannot reduce are converted
    first to the mode they would become anyway."""
    factor = max(img.width, img.height) // side
    if factor < 2:
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode.startswith("I;16"):
        img = img.convert("I")
    try:
        return img.reduce(factor)
    except ValueError:  # a mode reduce does not take: decoded at full size (still under max_pixels)
        return img


# What a run folder shows on the web: its records and pictures, never its weights or checkpoints.
PUBLISHED_SUFFIXES = {".json", ".csv", ".yaml", ".yml", ".md", ".txt", ".png", ".jpg", ".jpeg", ".gif", ".webp",
                      ".bmp", ".svg"}
TEXT_SUFFIXES = {".json", ".csv", ".yaml", ".yml", ".md", ".txt"}
MAX_PUBLISHED_BYTES = 50 * 2**20


def publishable_copy(run: Path, target: Path, settings: ServeSettings, depth: int = 2) -> Path:
    """A copy of `run` for the web: regular files only (a symlink inside a run could point anywhere, and is
    left out, pictures and records alike), records and pictures only (no weights), nested runs (an ablation's)
    to `depth` levels, and every text file without server paths. Reports for the web are written from it."""
    from ..runs import atomic_write_bytes

    target.mkdir(parents=True)
    for entry in sorted(run.iterdir()):
        if entry.is_symlink():
            continue
        if entry.is_dir() and depth > 1:
            publishable_copy(entry, target / entry.name, settings, depth - 1)
        elif (entry.is_file() and entry.suffix.lower() in PUBLISHED_SUFFIXES
              and entry.stat().st_size <= MAX_PUBLISHED_BYTES):
            data = entry.read_bytes()
            if entry.suffix.lower() in TEXT_SUFFIXES:
                data = without_server_paths(data.decode(errors="replace"), settings).encode()
            atomic_write_bytes(target / entry.name, data)
    return target


def scrub_page(page: Path, settings: ServeSettings) -> None:
    """An HTML page written for the web, without server paths (as written and HTML-escaped)."""
    from ..runs import atomic_write_bytes

    text = page.read_text()
    for path, shown in server_paths(settings):
        text = text.replace(path, shown).replace(html.escape(path), html.escape(shown))
    atomic_write_bytes(page, text.encode())
