"""ONNX files: written with torch.onnx.export, run with ONNX Runtime.

The TorchScript-based exporter (dynamo=False) is the one transfer/features.py already uses: it needs only the
`onnx` package (the dynamo exporter would also need onnxscript) and exports every cnnlab network. The file is
made in a temporary folder, the metadata (ExportMeta's JSON) added with `onnx`, and the bytes written
atomically: an interrupted export never leaves half a file under the final name.
"""

from __future__ import annotations

import tempfile
import warnings
from importlib.util import find_spec
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..runs import atomic_write_bytes
from .metadata import ONNX_KEY, ExportMeta

INSTALL = "pip install 'cnnlab[onnx]'"


def require(module: str, why: str) -> None:
    """A one-line error naming the extra to install when `module` (onnx, onnxruntime) is missing."""
    if find_spec(module) is None:
        raise UserError(f"{why} needs the {module} package, which is not installed: {INSTALL}")


def write_onnx(model: nn.Module, example: torch.Tensor, meta: ExportMeta, path: Path,
               dynamic: dict[int, str]) -> None:
    """`model` (eval mode, fp32, CPU) as an ONNX file at `path`, its input's `dynamic` axes left free."""
    require("onnx", "exporting to ONNX")
    import onnx

    names = {"input_names": [meta.input_name], "output_names": [meta.output_name],
             "dynamic_axes": {meta.input_name: dynamic, meta.output_name: dynamic}}
    with tempfile.TemporaryDirectory(prefix="cnnlab-export-") as tmp:
        file = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():  # the exporter's notes (constant folding, tracing)
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(file), dynamo=False, do_constant_folding=True, **names)
        proto = onnx.load(str(file))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_KEY, meta.to_json()
    proto.doc_string = f"cnnlab {meta.cnnlab_version}: a {meta.task} ({meta.kind} run) exported from {meta.run}"
    atomic_write_bytes(path, proto.SerializeToString())


class OnnxModel:
    """An exported .onnx file in an ONNX Runtime session: float32 tensors in, float32 tensors out."""

    def __init__(self, path: Path, device: torch.device):
        require("onnxruntime", "running an ONNX file")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # what configure_threads chose
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for a file that is not a model
            raise UserError(f"cannot read {path} as an ONNX model ({type(exc).__name__}); is it a file written by "
                            f"cnnlab export?") from None
        self.meta = ExportMeta.from_json(self.session.get_modelmeta().custom_metadata_map.get(ONNX_KEY), str(path))
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [self.meta.input_name]:
            raise UserError(f"{path} takes inputs {inputs}, not the '{self.meta.input_name}' its metadata names; "
                            f"the file was edited or damaged")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.meta.input_name: x.detach().to("cpu", torch.float32).contiguous().numpy()}
        return torch.from_numpy(self.session.run([self.meta.output_name], feed)[0])
