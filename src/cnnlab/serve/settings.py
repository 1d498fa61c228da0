"""What one `cnnlab serve` app is set up with, in one object: create_app takes it, the CLI fills it.

A frozen dataclass rather than loose keyword arguments, so that the routes read one typed value (through the
`SettingsDep` dependency) and a test or an embedding program builds an app the same way the CLI does. Each
field that is also a command-line flag says so in its metadata (flag, help): serve/run.py makes the flags from
these, so a new option is added here once, with its default and its help, and the CLI picks it up.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _flag(name: str, help: str, **argparse_options) -> dict:
    return {"flag": name, "help": help, **argparse_options}


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """Fields in the order create_app took them as arguments, so positional calls keep their meaning."""

    runs: str | Path = field(default="runs", metadata=_flag(
        "--runs", "the run directories to browse, report and train into (default runs)", metavar="DIR"))
    max_upload_mb: float = field(default=10, metadata=_flag(
        "--max-upload-mb", "larger uploads get 413, counted as they arrive (default 10)", type=float,
        metavar="MB"))
    device: str = "cpu"  # where the models answer
    default_model: str = "efficientnet_lite0"  # predict's model when the form names none
    # Host headers answered, exactly (an embedding program's choice; "*" answers any). None: the names this
    # machine is reached by (see allowed_host_names): a page on another name cannot reach us by rebinding DNS.
    allowed_hosts: Sequence[str] | None = None
    data_root: str | Path | None = field(default=None, metadata=_flag(
        "--data-root", "where runs started from the page find CIFAR-10 (default: $CNNLAB_DATA, else "
                       "~/.cache/cnnlab)", metavar="DIR"))
    max_stylize_side: int = 1024  # uploads are decoded and stylized at most about this large (longer side)
    host: str = field(default="127.0.0.1", metadata=_flag(
        "--host", "address to bind (default 127.0.0.1: this machine only); any other address needs the token "
                  "printed at start"))
    port: int = field(default=8000, metadata=_flag("--port", "port to bind (default 8000)", type=int))
    # The secret every request but /healthz carries (?token=, Authorization: Bearer, or the cookie the page's
    # URL sets). None: one is made for a non-loopback bind, none needed on loopback.
    token: str | None = field(default=None, metadata=_flag(
        "--token", "the access token (default: a random one when --host is not loopback, none on loopback); "
                   "also read from $CNNLAB_SERVE_TOKEN"))
    extra_hosts: Sequence[str] = field(default=(), metadata=_flag(
        "--allow-host", "also answer requests addressed to this host name (repeatable; e.g. the name a proxy "
                        "or /etc/hosts gives this machine)", action="append", metavar="NAME"))
    max_megapixels: float = field(default=25.0, metadata=_flag(
        "--max-megapixels", "uploaded images with more pixels than this (after Pillow's reduced JPEG "
                            "decoding) get 413 (default 25)", type=float, metavar="MP"))
    max_models: int = field(default=3, metadata=_flag(
        "--max-models", "models kept in memory; the least recently used goes first (default 3)", type=int,
        metavar="N"))
    keep_web_runs: int = field(default=10, metadata=_flag(
        "--keep-web-runs", "runs started from the page (web-*) kept under --runs; older ones are deleted when "
                           "a new one starts (default 10; 0 keeps all)", type=int, metavar="N"))
    train_interval: float = field(default=10.0, metadata=_flag(
        "--train-interval", "seconds between runs started from the page; sooner gets 429 (default 10)",
        type=float, metavar="SECONDS"))
    threads: int | None = field(default=None, metadata=_flag(
        "--threads", "CPU threads for the models (default: torch's choice)", type=int, metavar="N"))
    access_log: bool = field(default=False, metadata=_flag(
        "--access-log", "log every request (method, path, status) on stderr", action="store_true"))
    decode_slots: int = 2  # images decoded at once (each up to max_megapixels): bounds decoding memory
    model_slots: int = 2  # predictions and stylizations computed at once, off the threads the pages use
    shutdown_seconds: float = 3.0  # open progress streams and page-started runs are stopped within this

    def __post_init__(self):
        # Resolved now, not per request: error messages strip this exact prefix, and a later chdir moves nothing.
        object.__setattr__(self, "runs", Path(self.runs).resolve())
        if self.data_root is not None:  # absolute too: page-started runs must not depend on the cwd
            object.__setattr__(self, "data_root", str(Path(self.data_root).expanduser().resolve()))
        if self.allowed_hosts is not None:
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        object.__setattr__(self, "extra_hosts", tuple(h.lower() for h in self.extra_hosts or ()))
        if not self.max_upload_mb > 0:  # NaN fails too
            raise UserError(f"serve: max_upload_mb must be more than 0, got {self.max_upload_mb}")
        if self.max_stylize_side < 16:
            raise UserError(f"serve: max_stylize_side must be 16 or more, got {self.max_stylize_side}")
        if not 0 < self.port < 65536:
            raise UserError(f"serve: --port must be in 1-65535, got {self.port}")
        if not (0 < self.max_megapixels <= 89):  # 89: Pillow's own bomb limit, the library's (data/images.py)
            raise UserError(f"serve: --max-megapixels must be more than 0 and at most 89, got {self.max_megapixels}")
        for name in ("max_models", "decode_slots", "model_slots"):
            if getattr(self, name) < 1:
                raise UserError(f"serve: {name.replace('_', '-')} must be 1 or more, got {getattr(self, name)}")
        if self.keep_web_runs < 0 or not (0 <= self.train_interval < math.inf):
            raise UserError(f"serve: --keep-web-runs must be 0 or more and --train-interval 0 or more seconds, got "
                            f"{self.keep_web_runs} and {self.train_interval}")
        if self.token is None and not is_loopback(self.host):
            object.__setattr__(self, "token", secrets.token_urlsafe(32))  # Jupyter's way: printed with the URL
        elif self.token is not None and len(self.token) < 16 and not is_loopback(self.host):
            raise UserError("serve: --token must be 16 characters or more when --host is not loopback (anyone on "
                            "the network could guess a short one); leave it out to get a random one")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def url(self) -> str:
        """The address to open, with the token when one is needed (what `cnnlab serve` prints)."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # every address: the machine's name reaches it
            import socket

            host = socket.gethostname() or "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")
