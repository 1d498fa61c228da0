"""A trained run's network as one file for use outside cnnlab: ONNX (ONNX Runtime, TensorRT, OpenVINO, browsers)
or TorchScript (torch.jit, libtorch), with the preprocessing inside.

    from cnnlab.export import export, load_exported
    export("runs/scenes", "onnx")                  # -> runs/scenes/export/model.onnx
    model = load_exported("runs/scenes/export/model.onnx")
    model.meta.classes, model.meta.run_meta().view()   # class names; the photo preprocessing
    logits = model(batch)                          # float32 [N, 3, H, W], normalized -> [N, classes]

`cnnlab predict FILE.onnx IMAGE...` runs such a file through the same photo loading as `cnnlab predict
RUN_DIR IMAGE...` and prints the same JSON.

- metadata.py: ExportMeta, the JSON inside every file (preprocessing, classes, the run's kind, versions);
- writer.py: export(): which network a run folder holds, written and checked against the run's model;
- onnx_file.py, torchscript_file.py: each format's writer and runner;
- loading.py: load_exported(): a file opened by its suffix.
"""

from .loading import SUFFIXES, is_exported_file, load_exported
from .metadata import ExportMeta
from .writer import FORMATS, default_path, export

__all__ = ["FORMATS", "SUFFIXES", "ExportMeta", "default_path", "export", "is_exported_file", "load_exported"]
