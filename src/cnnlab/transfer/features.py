"""Features of an ImageNet backbone, extracted once and cached, for a softmax classifier on top.

The features are what the backbone's classifier would see (its input: the pooled output of the
convolutional trunk, 1,280 numbers for EfficientNet-Lite0, 2,048 for ResNet-50), computed with the
backbone in eval mode on the center-cropped images. They are cached next to the decoded images, keyed by
the images' key (files, sizes, modification times, resize and crop), the backbone's name and a digest of
its weights, the normalization and the precision (data/cache.py): a second run, or another classifier on the
same features, extracts nothing.

The classifier is an ``nn.Linear`` trained by the same engine as every other run (softmax cross-entropy,
any optimizer and schedule of the config), on the feature tensors instead of images: with 450 images of
1,280 features an epoch takes milliseconds, so a well-kept external solver would buy nothing but a
dependency.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..data import ClassificationData
from ..data.cache import cache_root, cached_tensors
from ..config import DataConfig
from ..engine.device import autocast, memory_format
from ..errors import UserError
from ..models import surgery


def weights_digest(model: nn.Module) -> str:
    """sha256 over the backbone's tensors (the classifier excluded): which weights made the features."""
    head = surgery.head_name(model)
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(head + "."):
            continue
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


BACKENDS = ("auto", "torch", "onnxruntime")


def extraction_backend(requested: str, device: torch.device, precision: str) -> str:
    """torch, or ONNX Runtime (auto: where it is installed, on a CPU, in fp32).

    On a 2-core AVX2 CPU ONNX Runtime extracts EfficientNet-Lite0 features about 1.6x faster than the best
    torch path cnnlab found (channels_last, batch norms folded, same-padding by the convolutions:
    benchmarks/transfer.py); on a GPU or in bf16 torch is the one that uses the hardware."""
    from importlib.util import find_spec

    if requested not in BACKENDS:
        raise UserError(f"transfer.extract_backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    installed = find_spec("onnxruntime") is not None and find_spec("onnx") is not None
    if requested == "onnxruntime" and not installed:
        raise UserError("transfer.extract_backend=onnxruntime needs onnxruntime and onnx: pip install "
                        "'cnnlab[onnx]' (or set transfer.extract_backend=torch)")
    if requested == "torch" or device.type != "cpu" or precision != "fp32":
        return "torch"
    return "onnxruntime" if installed else "torch"


def _export(trunk: nn.Module, example: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        import warnings

        with warnings.catch_warnings():  # the exporter's notes on constant folding are not for the user
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(trunk, example, str(tmp), input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _onnx_session(trunk: nn.Module, example: torch.Tensor, path: Path):
    """An ONNX Runtime session of `trunk`, exported once to `path` (reused by later runs: the name carries the
    weights' digest); a damaged file is exported again."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    if path.is_file():
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception:  # damaged or from another exporter: make it again
            path.unlink(missing_ok=True)
    _export(trunk, example, path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Extractor:
    """The classifier's input (float32 [N, features]) for uint8 images [N, 3, H, W], batch by batch.

    The network runs as an inference copy with its classifier removed and its batch norms folded into the
    convolutions (surgery.fold_batch_norms); `backend` is torch or onnxruntime (see extraction_backend;
    onnxruntime exports the copy once to `onnx_file` and reuses that file in later runs)."""

    def __init__(self, model: nn.Module, mean, std, device: torch.device, precision: str, channels_last: bool,
                 backend: str = "torch", onnx_file: Path | None = None, example: torch.Tensor | None = None):
        name = surgery.head_name(model)
        self.dim = surgery.head(model).in_features
        head = surgery.swap_module(model, name, nn.Identity())  # the classifier's input is the output now
        try:
            trunk = surgery.fold_batch_norms(model.eval())
        finally:
            surgery.swap_module(model, name, head)
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.m = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.s = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.session = None
        if backend == "onnxruntime":
            if onnx_file is None or example is None:
                raise ValueError("the onnxruntime backend needs onnx_file and an example image")
            self.session = _onnx_session(trunk.to(device), (example[:1].float() - self.m) / self.s, onnx_file)
        self.trunk = trunk.to(device, memory_format=memory_format(channels_last))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        out = []
        for start in range(0, len(images), batch_size):
            x = (images[start:start + batch_size].to(self.device).float() - self.m) / self.s
            if self.session is not None:
                out.append(torch.from_numpy(self.session.run(None, {"x": x.contiguous().numpy()})[0]).flatten(1))
                continue
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):
                out.append(self.trunk(x).float().flatten(1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)


def extract(model: nn.Module, images: torch.Tensor, mean, std, device: torch.device, precision: str,
            channels_last: bool, batch_size: int = 64, backend: str = "torch",
            onnx_file: Path | None = None) -> torch.Tensor:
    """float32 [N, features]: the classifier's input for uint8 images [N, 3, H, W] (see Extractor)."""
    extractor = Extractor(model, mean, std, device, precision, channels_last, backend, onnx_file, images[:1])
    return extractor(images, batch_size)


def feature_data(data: ClassificationData, backbone: nn.Module, backbone_name: str, cfg: DataConfig,
                 device: torch.device, precision: str, channels_last: bool,
                 backend: str = "auto") -> tuple[ClassificationData, dict]:
    """`data` with each split's images replaced by the backbone's features (from the cache when there).

    Returns (the feature data, {"cache": "hit" | "miss", "key": ...}). Features are float32 [N, D]; their
    mean/std fields are unused (the batches do not normalize them). The cache key leaves out the backend on
    purpose: torch and ONNX Runtime compute the same features up to float rounding (tested to 1e-3).
    """
    digest = weights_digest(backbone)
    splits = ("train", "val", "test")
    used = extraction_backend(backend, device, precision)

    def build() -> dict[str, torch.Tensor]:
        shape = "x".join(map(str, data.train_images.shape[-2:]))
        onnx_file = cache_root(cfg) / f"onnx-{backbone_name}-{digest}-{shape}.onnx"
        extractor = Extractor(backbone, data.mean, data.std, device, precision, channels_last, used, onnx_file,
                              data.train_images[:1])
        return {s: extractor(getattr(data, f"{s}_images")) for s in splits}

    expect = {s: ((len(getattr(data, f"{s}_images")), None), torch.float32) for s in splits}
    entry = cached_tensors(cache_root(cfg), "features", [data.checksum, backbone_name, digest, list(data.mean),
                                                         list(data.std), precision],
                           build, what="feature cache", expect=expect, metadata={"backbone": backbone_name},
                           validate=lambda t: len({x.shape[1] for x in t.values()}) == 1)  # one backbone's width
    stored, key = entry.tensors, entry.key
    status = "hit" if entry.hit else "miss"
    features = replace(data, train_images=stored["train"], val_images=stored["val"], test_images=stored["test"],
                       checksum=key)
    return features, {"cache": status, "key": key, "dimensions": int(stored["train"].shape[1]),
                      "backend": used if status == "miss" else None}
