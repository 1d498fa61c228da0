"""Property-based tests (hypothesis): whatever a user types or uploads, the config parser, the override parser
and the image loader answer with a result or a clear UserError, never another exception."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab import config
from cnnlab.data.images import decode_image
from cnnlab.errors import UserError

# CI explores the same 150 examples per test every time (derandomized: a red build is always reproducible);
# CNNLAB_FUZZ_EXAMPLES=5000 CNNLAB_FUZZ_RANDOM=1 make test hunts further.
SETTINGS = settings(max_examples=int(os.environ.get("CNNLAB_FUZZ_EXAMPLES", "150")), deadline=None,
                    derandomize=not os.environ.get("CNNLAB_FUZZ_RANDOM"), database=None,
                    suppress_health_check=[HealthCheck.too_slow])
KEYS = config.all_keys()
SECTIONS = sorted({k.split(".")[0] for k in KEYS})
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=8)


def _config_or_user_error(**kwargs) -> None:
    try:
        cfg = config.resolve(**kwargs)
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), str(exc)
    else:
        assert isinstance(cfg, config.Config)


@SETTINGS
@given(st.dictionaries(st.one_of(st.sampled_from(SECTIONS), st.text(max_size=8)),
                       st.one_of(values, st.dictionaries(st.sampled_from([k.split(".", 1)[1] for k in KEYS
                                                                          if "." in k]), values, max_size=5)),
                       max_size=5))
def test_any_config_mapping_gives_a_config_or_a_user_error(data):
    _config_or_user_error(base=data)


@SETTINGS
@given(st.sampled_from(KEYS), values)
def test_any_value_for_a_known_key_gives_a_config_or_a_user_error(key, value):
    _config_or_user_error(overrides={key: value})


@SETTINGS
@given(st.text(max_size=40))
def test_any_override_text_parses_or_is_a_user_error(text):
    try:
        key, _ = config.parse_override(text)
    except UserError:
        assert "=" not in text
        return
    _config_or_user_error(overrides={key: config.parse_override(text)[1]} if key else {})


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


VALID = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")}


def _image_or_user_error(data: bytes) -> bool:
    """True when the bytes decoded (to an RGB uint8 image), False when they gave a UserError naming them."""
    try:
        image = decode_image(data, "fuzz.bin")
    except UserError as exc:
        assert "fuzz.bin" in str(exc)
        return False
    assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3
    return True


@SETTINGS
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_are_a_user_error(data):
    _image_or_user_error(data)


DECODED: list[bool] = []


@SETTINGS
@given(st.sampled_from(sorted(VALID)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.one_of(st.none(), st.integers(1, 10**6)))
def test_damaged_image_files_decode_or_are_a_user_error(fmt, flips, cut):
    """Bytes changed here and there (pixels, headers), and sometimes the file cut short."""
    data = bytearray(VALID[fmt])
    for position, byte in flips:
        data[position % len(data)] = byte
    if cut is not None:
        data = data[: cut % len(data) or 1]
    DECODED.append(_image_or_user_error(bytes(data)))


def test_the_damaged_files_include_both_outcomes():
    """Run after the fuzzing above: some damaged files still decode (a changed pixel), others do not."""
    assert any(DECODED) and not all(DECODED), DECODED[:20]


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_the_undamaged_files_decode(fmt):
    assert tuple(decode_image(VALID[fmt]).shape) == (3, 24, 32)
