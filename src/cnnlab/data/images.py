"""Reading image files safely, whatever their format and mode, for every command that takes photos.

Any file Pillow can decode (JPEG, PNG, BMP, GIF, TIFF, WebP, ...) in any mode (greyscale, RGBA, palette,
16-bit, CMYK, float) becomes an RGB uint8 tensor [3, H, W]: EXIF rotation applied, transparency composited
on white, 16-bit and float images rescaled to 0-255. Decompression bombs and truncated or non-image files
give a one-line error that names the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_PIXELS = 89_478_485  # Pillow's default bomb limit (~ 0.25 GB of RGBA), made an error instead of a warning


def _to_rgb_array(img) -> np.ndarray:
    """HxWx3 uint8 from a Pillow image of any mode."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode == "I" and arr.max() <= 255:
            top = 255.0
        if mode == "F":
            low = float(arr.min())
            arr, top = arr - low, max(float(arr.max()) - low, 1e-12)
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy


def read_image(path: str | Path) -> torch.Tensor:
    """RGB uint8 tensor [3, H, W] of an image file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"image {path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass image files, or the folder where a folder is accepted")
    return _decode(path, str(path))


def decode_image(data: bytes, name: str = "the upload") -> torch.Tensor:
    """RGB uint8 tensor [3, H, W] of an image file's bytes (an upload): accepted by content, whatever its name."""
    import io

    return _decode(io.BytesIO(data), name)


def _decode(source, name: str) -> torch.Tensor:
    """The decoder shared by files and uploads. The pixel count is checked from the header, before anything is
    decoded, against MAX_PIXELS (no global state is changed: the web app decodes in several threads)."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    too_large = f"{name} is too large to decode safely (over {MAX_PIXELS:,} pixels); resize it first"
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: the check below says it as an error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise UserError(too_large)
                img = ImageOps.exif_transpose(img)
                img.load()
                arr = _to_rgb_array(img)
    except UnidentifiedImageError:
        raise UserError(f"{name} is not an image file that can be read (JPEG, PNG, BMP, GIF, TIFF, WebP)") from None
    except Image.DecompressionBombError:
        raise UserError(too_large) from None
    except OSError as exc:
        raise UserError(f"cannot read image {name} ({exc}); the file may be truncated or damaged") from None
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def images_under(folder: str | Path) -> list[Path]:
    """Every image file under `folder` at any depth (a dataset's class folders or splits), sorted; [] if none."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def expand_image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted); an empty result is an error."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"folder {p} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        else:
            paths.append(p)
    if not paths:
        raise UserError("no images given; pass image files or a folder of images")
    return paths


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """float [3, H, W] (or [1, 3, H, W]) in [0, 1] -> uint8 [3, H, W], rounded."""
    if image.dim() == 4:
        image = image[0]
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write an image (uint8, or float in [0, 1]) as PNG atomically: a crash never leaves half a file."""
    import io

    from PIL import Image

    from ..runs import atomic_write_bytes

    pixels = image if image.dtype == torch.uint8 else to_uint8(image)
    buffer = io.BytesIO()  # Pillow, not torchvision.io: torchvision's image codecs are deprecated since 0.29
    Image.fromarray(pixels.cpu().permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
