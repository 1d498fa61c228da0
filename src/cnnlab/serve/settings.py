"""What one `cnnlab serve` app is set up with, in one object: create_app takes it, the CLI fills it.

A frozen dataclass rather than loose keyword arguments, so that the routes read one typed value (through the
`SettingsDep` dependency) and a test or an embedding program builds an app the same way the CLI does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class ServeSettings:
    """Fields in the order create_app took them as arguments, so positional calls keep their meaning."""

    runs: str | Path = "runs"  # the runs folder: listed, reported, trained into; resolved once, here
    max_upload_mb: float = 10  # request bodies over this get 413, counted as they arrive
    device: str = "cpu"  # where the models answer
    default_model: str = "efficientnet_lite0"  # predict's model when the form names none
    # Host headers answered (the CLI passes localhost's names when bound to localhost, against DNS
    # rebinding); None (or empty) answers any.
    allowed_hosts: Sequence[str] | None = None
    data_root: str | Path | None = None  # where runs started from the page find CIFAR-10 (None: the usual root)
    max_stylize_side: int = 1024  # uploads are stylized at most this large: the decoder accepts ~89 M pixels

    def __post_init__(self):
        # Resolved now, not per request: error messages strip this exact prefix, and a later chdir moves nothing.
        object.__setattr__(self, "runs", Path(self.runs).resolve())
        if self.allowed_hosts is not None:
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        if not self.max_upload_mb > 0:  # NaN fails too
            raise UserError(f"serve: max_upload_mb must be more than 0, got {self.max_upload_mb}")
        if self.max_stylize_side < 16:
            raise UserError(f"serve: max_stylize_side must be 16 or more, got {self.max_stylize_side}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)
