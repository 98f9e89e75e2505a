"""Getting a found net out of effnas: plain PyTorch, torch.export, ONNX and TorchScript files.

- :mod:`nas.export.writer`: :func:`export_model` writes a spec (fresh weights) or an effnas weights
  file in one of the four formats, and checks the written file against effnas's own model;
- :mod:`nas.export.template`: the source of the self-contained PyTorch file (real, linted Python
  that imports torch and torchvision only).

This package reads specs and weights and writes files; it must not train or search.
"""

from __future__ import annotations

from searchspace.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "FORMATS": "nas.export.writer",
        "ExportResult": "nas.export.writer",
        "export_model": "nas.export.writer",
    },
)

__all__ = ["FORMATS", "ExportResult", "export_model"]
