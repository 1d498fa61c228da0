"""OpenCV, imported when optical flow is first needed (apply's temporal blend, the flicker measure), with a
one-line error naming the package when an install lacks it."""

from __future__ import annotations

from ..errors import UserError


def opencv(purpose: str):
    """The cv2 module; `purpose` names what needs it in the error (e.g. "the flicker measure")."""
    try:
        import cv2
    except ImportError:
        raise UserError(f"{purpose} needs OpenCV: pip install opencv-python-headless") from None
    return cv2
