"""Getting a found net out of effnas: plain PyTorch, torch.export, ONNX and TorchScript files.

:func:`export_model` takes a spec (exported with fresh weights) or an effnas weights file (from
``nas train`` or ``nas weights import``) and writes one of four formats: ``pytorch`` (a
self-contained Python file, :mod:`nas.export.template`, and a state dict with effnas's keys),
``export`` (a ``torch.export`` program, ``.pt2``, with a dynamic batch dimension), ``onnx``
(torch's dynamo exporter, checked with the ONNX checker) or ``torchscript`` (legacy: torch 2.10+
deprecates it). Every export is written to a scratch folder beside the output, loaded back and
compared with effnas's own model in eval mode, and only then renamed into place, so a failed
export leaves nothing behind. What each format holds and why: docs/exporting.md.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from nas.errors import ExportError
from searchspace.builder import EfficientNetV2, build_model
from searchspace.catalog import load_arch
from searchspace.checks import check_int
from searchspace.spec import ArchSpec
from searchspace.weights import load_weights

__all__ = [
    "EXPORT_SUFFIX",
    "FORMATS",
    "ONNX_INPUT",
    "ONNX_OPSET",
    "ONNX_OUTPUT",
    "ExportResult",
    "export_model",
    "load_export_model",
    "pytorch_source",
]

#: The formats :func:`export_model` writes (``torchscript`` is legacy: torch deprecates it).
FORMATS = ("pytorch", "torchscript", "onnx", "export")
#: The file suffix a ``torch.export`` program is saved with (``torch.export.save``'s convention).
EXPORT_SUFFIX = ".pt2"
#: Default ONNX opset: the lowest that torch's dynamo exporter writes without a version
#: conversion (its translation library's; lower ones are converted, which may fail), so the one
#: the most runtimes read (onnxruntime since 1.14). torch 2.14's own default is 20.
ONNX_OPSET = 18
#: Names of the ONNX graph's input and output.
ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
#: Largest difference to effnas's model that the check after an export accepts, relative to the
#: largest output (at least 1): TorchScript, torch.export programs and the Python file run the same
#: torch kernels; onnxruntime has its own, which sum in other orders.
TOLERANCE = {"pytorch": 1e-5, "torchscript": 1e-5, "onnx": 1e-4, "export": 1e-5}
# What the check feeds: more than one image, and not the exporter's example batch size (2), so a
# batch dimension that the export fixed by mistake would fail it.
_CHECK_BATCH = 3
# File suffixes read as effnas weights files (besides any zip archive, torch.save's format).
_WEIGHTS_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_TEMPLATE_BEGIN = "# --- architecture: begin ---\n"
_TEMPLATE_END = "# --- architecture: end ---\n"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote, and what the files expect.

    Attributes:
        format: ``pytorch``, ``torchscript``, ``onnx`` or ``export``.
        files: the files written, the main one first.
        name: the net's label (its spec name, or its hash).
        spec: the net's spec string (``searchspace.load_arch`` reads it).
        num_classes: outputs of the classifier.
        weights: where the weights came from: an effnas weights file, or ``fresh (seed N)``.
        classifier_reset: the weights file had another number of classes, so the classifier is
            freshly initialized.
        image_size: the square input size the files are made for (the spec's eval size unless
            chosen).
        dynamic_size: ONNX and ``export`` only: height and width are dynamic.
        eval_mode: the model was exported in eval mode (BatchNorm inference, no dropout, no
            stochastic depth); for ``pytorch``, the default of the file's ``load()``.
        opset: ONNX only: the default-domain opset.
        mean: per-channel mean the input is normalized with (RGB, images in [0, 1]).
        std: per-channel standard deviation, likewise.
        max_abs_diff: largest difference between the exported files' outputs and effnas's, on a
            random batch in eval mode; None if not checked.
        check: how the files were checked, in words.
        warning: why the outputs differ more than expected, or "" (see the check in
            :func:`export_model`).
        seconds: time to write the files, without the check.
    """

    format: str
    files: tuple[str, ...]
    name: str
    spec: str
    num_classes: int
    weights: str
    classifier_reset: bool
    image_size: int
    dynamic_size: bool
    eval_mode: bool
    opset: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_abs_diff: float | None
    check: str
    warning: str
    seconds: float

    @property
    def input_shape(self) -> str:
        """The input the files expect, e.g. ``N x 3 x 224 x 224``."""
        size = "H x W" if self.dynamic_size else f"{self.image_size} x {self.image_size}"
        return f"N x 3 x {size}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_shape": self.input_shape}

    def lines(self) -> list[str]:
        """A short human summary: what was written, the input expected, how it was checked."""
        wrote = self.files[0] + "".join(f" and {name}" for name in self.files[1:])
        weights = f"weights {self.weights}"
        if self.classifier_reset:
            weights += f", classifier freshly initialized for {self.num_classes} classes"
        if self.eval_mode:
            mode = "eval mode (BatchNorm inference, no dropout, no stochastic depth)"
        else:
            mode = "train mode (call .eval() for inference)"
        if self.format == "pytorch":
            mode = f"load() returns it in {mode}"
        opset = f"; ONNX opset {self.opset}" if self.opset is not None else ""
        if self.format in ("onnx", "export"):
            names = f" {ONNX_INPUT!r}" if self.format == "onnx" else ""
            sizes = "N dynamic" + (", H and W dynamic" if self.dynamic_size else "")
        else:
            names = ""
            sizes = f"any N, H, W; made for {self.image_size} x {self.image_size}"
        checked = (
            f"checked: {self.check}, max abs difference {self.max_abs_diff:.3g}"
            if self.max_abs_diff is not None
            else f"check: {self.check}"
        )
        return [
            f"wrote {wrote}",
            f"net: {self.name}, {self.num_classes} classes, {weights}; {mode}{opset}",
            f"input{names}: float32 {self.input_shape} ({sizes}), RGB in [0, 1] normalized "
            f"with mean {self.mean} and std {self.std} (ImageNet's); output: N x "
            f"{self.num_classes} logits",
            checked,
        ]


# ---------------------------------------------------------------------------------------------
# Inputs


def _normalization() -> tuple[tuple[float, ...], tuple[float, ...]]:
    # The statistics every effnas dataset is normalized with; read from nas.data, where the
    # training pipeline takes them, so an export can never state other numbers than it trains on.
    from nas.data.bundle import IMAGENET_MEAN, IMAGENET_STD

    return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)


def _is_weights_file(path: Path) -> bool:
    """A file to read with ``torch.load(weights_only=True)`` rather than as a YAML spec."""
    if not path.is_file() or path.suffix.lower() in (".yaml", ".yml"):
        return False
    # torch.save writes zip archives; the suffixes catch torch files too broken to be one.
    return path.suffix.lower() in _WEIGHTS_SUFFIXES or zipfile.is_zipfile(path)


def load_export_model(
    source: str | os.PathLike[str] | ArchSpec | EfficientNetV2,
    *,
    num_classes: int | None = None,
    seed: int = 0,
) -> tuple[EfficientNetV2, str, bool]:
    """The model to export, where its weights came from, and whether its classifier is new.

    Args:
        source: an effnas weights file (a ``.pt``/``.pth`` file or any torch zip archive, read
            with ``weights_only=True``), a spec (catalog name, YAML file, spec string or
            :class:`ArchSpec`: built with fresh weights), or an effnas model (copied, not changed).
        num_classes: classifier outputs; a weights file with another number gets a fresh
            classifier (for fine-tuning elsewhere).
        seed: seeds every fresh weight, so an export of a spec is reproducible; the global RNG is
            left as it was.

    Raises:
        WeightsError: a weights file that cannot be read or is not effnas's.
        SpecError: a spec that cannot be built.
        ExportError: ``num_classes`` below 1.
    """
    if num_classes is not None:
        check_int("--num-classes", num_classes, 1, ExportError)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = f"fresh (seed {seed})"
        if isinstance(source, EfficientNetV2):
            model, origin = copy.deepcopy(source), "given"
        elif isinstance(source, ArchSpec):
            model, origin = build_model(source, num_classes), fresh
        elif _is_weights_file(Path(source)):
            model, origin = load_weights(source), f"from {source}"
        else:
            model, origin = build_model(load_arch(source), num_classes), fresh
        reset = num_classes is not None and num_classes != model.spec.num_classes
        if reset:
            model.reset_classifier(num_classes)
    return model.float().cpu(), origin, reset


def _check_out(out: str | os.PathLike[str], format: str) -> Path:
    path = Path(out)
    if path.is_dir():
        raise ExportError(f"--out {str(path)!r} is a directory; give a file name")
    if not path.parent.is_dir():
        raise ExportError(f"--out {str(path)!r}: directory {str(path.parent)!r} does not exist")
    if format == "pytorch" and path.suffix != ".py":
        raise ExportError(f"--out {str(path)!r} must end in .py for --format pytorch")
    if format == "export" and path.suffix != EXPORT_SUFFIX:
        raise ExportError(f"--out {str(path)!r} must end in {EXPORT_SUFFIX} for --format export")
    return path


# ---------------------------------------------------------------------------------------------
# pytorch: a Python file and a state dict


def _literal(value: Any) -> str:
    # JSON's string syntax is valid Python and gives the double quotes the template uses.
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _stage_table(spec: ArchSpec) -> list[str]:
    """``STAGES`` as column-aligned ``Stage(...)`` rows: the architecture readable at a glance."""
    header = ("block", "repeats", "kernel", "stride", "expand_ratio", "out_channels", "se_ratio")
    rows = [[_literal(getattr(stage, name)) for name in header] for stage in spec.stages]
    # Every cell but the last is followed by a comma; a column is as wide as its widest entry.
    for row in rows:
        row[:-1] = [cell + "," for cell in row[:-1]]
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(header)]
    lines = ["STAGES = [", "    #     " + " ".join(map(str.ljust, header, widths)).rstrip()]
    lines += [f"    Stage({' '.join(map(str.ljust, row, widths)).rstrip()})," for row in rows]
    return [*lines, "]"]


def pytorch_source(
    spec: ArchSpec, *, image_size: int, weights_file: str, eval_mode: bool, module: str = "net"
) -> str:
    """The text of the self-contained Python file for ``spec`` (torch and torchvision only).

    Args:
        spec: the architecture; its stage table and settings become the file's data.
        image_size: the square input size the file states (``IMAGE_SIZE``).
        weights_file: the state-dict file's name, looked up beside the Python file.
        eval_mode: the default of the file's ``load(eval_mode=...)``.
        module: the file's module name, for the usage example in its docstring.
    """
    template = resources.files("nas.export").joinpath("template.py").read_text()
    body = template[template.index("from __future__ import annotations") :]
    begin, end = body.index(_TEMPLATE_BEGIN), body.index(_TEMPLATE_END) + len(_TEMPLATE_END)
    mean, std = _normalization()
    data = [
        "# The architecture, as data (written by effnas; the classes below build it).",
        f"NAME = {_literal(spec.label)}",
        f"SPEC = {_literal(spec.to_string())}  # effnas's spec string",
        f"STEM_CHANNELS = {spec.stem_channels}",
        f"HEAD_CHANNELS = {spec.head_channels}",
        f"NUM_CLASSES = {spec.num_classes}",
        f"DROPOUT = {spec.dropout!r}  # before the classifier, in train mode",
        f"DROP_PATH_RATE = {spec.drop_path_rate!r}  # block i of n: DROP_PATH_RATE * i / n",
        f"BN_EPS = {spec.bn_eps!r}",
        f"BN_MOMENTUM = {spec.bn_momentum!r}  # PyTorch's convention",
        f"IMAGE_SIZE = {image_size}  # inputs: N x 3 x IMAGE_SIZE x IMAGE_SIZE",
        f"MEAN = {mean!r}  # RGB in [0, 1], normalized with ImageNet's mean and std",
        f"STD = {std!r}",
        f"WEIGHTS_FILE = {_literal(weights_file)}  # the state dict, beside this file",
        f"EVAL = {eval_mode!r}  # load()'s default: eval mode (BN inference, no dropout)",
        *_stage_table(spec),
    ]
    name = module if module.isidentifier() else "net"
    docstring = f'''"""An EfficientNetV2-style convnet, exported by effnas (``nas export``).

Self-contained: torch and torchvision only. NAME, SPEC and STAGES below say which net it is; the
classes after them build it. The weights are a plain state dict in WEIGHTS_FILE beside this file,
read with ``torch.load(..., weights_only=True)``; its keys are effnas's own, so weights move
between this model and effnas's ``build_model(load_arch(SPEC))`` either way.

    from {name} import IMAGE_SIZE, MEAN, STD, build, load

    model = load(eval_mode=True)  # the exported weights; build() for fresh ones
    logits = model(images)  # float32 N x 3 x IMAGE_SIZE x IMAGE_SIZE, RGB in [0, 1],
    # normalized: torchvision.transforms.v2.Normalize(MEAN, STD)

``python {name}.py`` loads the weights and runs a batch as a check.
"""

'''
    return docstring + body[:begin] + "\n".join(data) + "\n" + body[end:]


def _import_file(path: Path) -> Any:
    # A private module name, not registered in sys.modules: the check must not shadow or be
    # shadowed by anything the caller imported.
    spec = importlib.util.spec_from_file_location(f"_effnas_export_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_pytorch(model: EfficientNetV2, path: Path, options: dict[str, Any]) -> Callable:
    weights = path.with_suffix(".pth")
    source = pytorch_source(
        model.spec,
        image_size=options["image_size"],
        weights_file=weights.name,
        eval_mode=options["eval_mode"],
        module=path.stem,
    )
    path.write_text(source)
    torch.save({key: t.detach().clone() for key, t in model.state_dict().items()}, weights)

    def loaded() -> Callable:
        net = _import_file(path).load(eval_mode=True)
        # The promise that weights move both ways: the same keys, in the same order.
        if list(net.state_dict()) != list(model.state_dict()):
            raise RuntimeError("the exported Python file's state-dict keys differ from effnas's")
        return net

    return loaded


# ---------------------------------------------------------------------------------------------
# torchscript


def _metadata(model: EfficientNetV2, options: dict[str, Any]) -> dict[str, str]:
    mean, std = _normalization()
    return {
        "effnas.name": model.spec.label,
        "effnas.spec": model.spec.to_string(),
        "effnas.image_size": str(options["image_size"]),
        "effnas.input": "float32 N x 3 x H x W, RGB in [0, 1] normalized with mean and std",
        "effnas.mean": json.dumps(mean),
        "effnas.std": json.dumps(std),
    }


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    # torch 2.10+ warns on every torch.jit.script/save/load call that TorchScript is deprecated;
    # it still works, and docs/exporting.md says so once instead.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated")
        yield


def _write_torchscript(model: EfficientNetV2, path: Path, options: dict[str, Any]) -> Callable:
    model.train(not options["eval_mode"])
    with _quiet_jit():
        # Scripted, not traced: scripting keeps the train/eval switch and every input size.
        scripted = torch.jit.script(model)
        extra = {"effnas.json": json.dumps(_metadata(model, options), indent=1)}
        torch.jit.save(scripted, str(path), _extra_files=extra)

    def loaded() -> Callable:
        with _quiet_jit():
            return torch.jit.load(str(path), map_location="cpu").eval()

    return loaded


# ---------------------------------------------------------------------------------------------
# export: a torch.export program


def _write_export(model: EfficientNetV2, path: Path, options: dict[str, Any]) -> Callable:
    model.eval()
    size, stride = options["image_size"], model.spec.total_stride
    # The example batch is 2, since torch.export specializes a dimension whose example size is 1;
    # a batch of 1 still runs (min=1): nothing in the net branches on the batch size. Height and
    # width start one pixel above the total stride: at the stride itself the last feature map is
    # 1 x 1, and torch.export refuses a range that includes it (see _options).
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1)}
    if options["dynamic_size"]:
        dims[2] = torch.export.Dim("height", min=stride + 1)
        dims[3] = torch.export.Dim("width", min=stride + 1)
    program = torch.export.export(
        model, (torch.zeros(2, 3, size, size),), dynamic_shapes=(dims,), strict=False
    )
    extra = {"effnas.json": json.dumps(_metadata(model, options), indent=1)}
    torch.export.save(program, str(path), extra_files=extra)

    def loaded() -> Callable:
        # The program runs as it was exported (eval mode); its module has no working .eval().
        return torch.export.load(str(path)).module()

    return loaded


# ---------------------------------------------------------------------------------------------
# onnx


def _onnx_modules() -> tuple[Any, Any]:
    """``onnx`` and ``onnxruntime`` (None if absent); a one-line error without the extra."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's dynamo exporter translates with it)
    except ImportError as error:
        raise ExportError(
            f"--format onnx needs the optional packages onnx and onnxscript ({error}); "
            "install them with: pip install 'effnas[export]'"
        ) from None
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    return onnx, onnxruntime


def _write_onnx(model: EfficientNetV2, path: Path, options: dict[str, Any]) -> Callable | None:
    onnx, onnxruntime = options["onnx_modules"]
    model.eval()
    size, stride = options["image_size"], model.spec.total_stride
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1)}
    if options["dynamic_size"]:
        dims[2] = torch.export.Dim("height", min=stride)
        dims[3] = torch.export.Dim("width", min=stride)
    with warnings.catch_warnings():
        # The exporter warns about its own internals (e.g. deprecated torch.export options).
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (torch.zeros(2, 3, size, size),),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=(dims,),
            opset_version=options["opset"],
            verbose=False,
        )
    program.model.doc_string = f"effnas {model.spec.label}: {model.spec.to_string()}"
    program.model.metadata_props.update(_metadata(model, options))
    # Weights go in the file unless they pass protobuf's 2 GB limit; then beside it (.data).
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    if onnxruntime is None:
        return None

    def loaded() -> Callable:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {ONNX_INPUT: images.numpy()})[0])

        return run

    return loaded


# ---------------------------------------------------------------------------------------------


_WRITERS = {
    "pytorch": _write_pytorch,
    "torchscript": _write_torchscript,
    "onnx": _write_onnx,
    "export": _write_export,
}


def _options(
    format: str,
    model: EfficientNetV2,
    image_size: int | None,
    eval_mode: bool | None,
    dynamic_size: bool,
    opset: int | None,
) -> dict[str, Any]:
    """Every option checked against the format and the net; one line per mistake."""
    spec = model.spec
    image_size = spec.eval_resolution if image_size is None else image_size
    check_int("--image-size", image_size, 1, ExportError)
    if image_size < spec.total_stride:
        raise ExportError(
            f"--image-size must be at least the net's total stride {spec.total_stride}, "
            f"got {image_size}"
        )
    eval_mode = format != "pytorch" if eval_mode is None else bool(eval_mode)
    options = {"image_size": image_size, "eval_mode": eval_mode, "dynamic_size": dynamic_size}
    if format == "export":
        if opset is not None:
            raise ExportError("--opset is for --format onnx, not export")
        if not eval_mode:
            raise ExportError("--format export writes inference programs only; drop --no-eval")
        if dynamic_size and image_size <= spec.total_stride:
            raise ExportError(
                f"--image-size must be above the net's total stride {spec.total_stride} for "
                f"--format export --dynamic-size (a 1 x 1 last feature map fixes the size), "
                f"got {image_size}"
            )
        return {**options, "opset": None}
    if format != "onnx":
        if dynamic_size:
            raise ExportError(
                f"--dynamic-size is for --format onnx and export; a {format} file takes any "
                "image size"
            )
        if opset is not None:
            raise ExportError(f"--opset is for --format onnx, not {format}")
        return {**options, "opset": None}
    if not eval_mode:
        raise ExportError("--format onnx exports inference graphs only; drop --no-eval")
    onnx_modules = _onnx_modules()
    opset = ONNX_OPSET if opset is None else opset
    highest = onnx_modules[0].defs.onnx_opset_version()
    check_int("--opset", opset, ONNX_OPSET, ExportError)
    if opset > highest:
        raise ExportError(f"--opset must be at most {highest} (this onnx's newest), got {opset}")
    return {**options, "opset": opset, "onnx_modules": onnx_modules}


def _compare(
    model: EfficientNetV2, loaded: Callable, format: str, image_size: int
) -> tuple[float, str]:
    """Largest output difference between effnas's model and the exported one (eval mode).

    Returns the difference and a warning ("" if none). A difference above :data:`TOLERANCE`
    (times the largest output, if above 1) is an export bug unless effnas's own float32 outputs
    already differ from float64 by more than that on the same images: a net that amplifies
    rounding that much (badly scaled BatchNorm statistics, say) cannot meet the tolerance in any
    float32 runtime, so then the files are kept, with a warning that gives both figures.

    Raises:
        RuntimeError: the exported model gives another shape, non-finite outputs, or outputs
            further from effnas's than effnas's own rounding explains.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(_CHECK_BATCH, 3, image_size, image_size, generator=generator)
    with torch.no_grad():
        expected = model.eval()(images)
        got = loaded(images)
    if got.shape != expected.shape:
        raise RuntimeError(
            f"exported {format} gives shape {list(got.shape)}, not {list(expected.shape)}"
        )
    diff = float((got - expected).abs().max())
    allowed = TOLERANCE[format] * max(1.0, float(expected.abs().max()))
    if math.isfinite(diff) and diff <= allowed:
        return diff, ""
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(images.double())
    rounding = float((expected.double() - exact).abs().max())
    figures = (
        f"the exported {format} differs from effnas's model by {diff:.3g} at {image_size} px, "
        f"more than the {allowed:.3g} expected, and effnas's own float32 outputs differ from "
        f"float64 by {rounding:.3g}"
    )
    if not math.isfinite(diff) or rounding <= allowed:
        raise RuntimeError(f"{figures}: an export bug, please report it")
    return diff, f"{figures}: this net amplifies rounding, so no float32 runtime agrees closer"


def export_model(
    source: str | os.PathLike[str] | ArchSpec | EfficientNetV2,
    format: str,
    out: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    image_size: int | None = None,
    eval_mode: bool | None = None,
    dynamic_size: bool = False,
    opset: int | None = None,
    seed: int = 0,
    check: bool = True,
) -> ExportResult:
    """Write a net as a plain PyTorch file, a torch.export program, an ONNX or a TorchScript file.

    Args:
        source: an effnas weights file, a spec (catalog name, YAML file, spec string,
            :class:`ArchSpec`; fresh weights) or an effnas model; see :func:`load_export_model`.
        format: ``pytorch``, ``export``, ``onnx`` or ``torchscript`` (legacy).
        out: the file to write; its directory must exist. ``pytorch`` needs a ``.py`` name and
            writes the state dict beside it with the suffix ``.pth``; ``export`` needs a ``.pt2``
            name.
        num_classes: classifier outputs (default: the spec's or the weights file's).
        image_size: the square input size (default: the spec's eval size). It fixes an ONNX
            graph's and an ``export`` program's height and width (unless ``dynamic_size``); the
            other formats take any size and only state it.
        eval_mode: export in eval mode: BatchNorm with its running statistics, dropout and
            stochastic depth off. Default: True for ``torchscript``, ``onnx`` and ``export``
            (deployment; ONNX and ``export`` are inference-only), False for ``pytorch`` (a net to
            train further; the file's ``load(eval_mode=...)`` chooses either way).
        dynamic_size: ONNX and ``export`` only: height and width dynamic (ONNX: at least the
            net's total stride; ``export``: above it).
        opset: ONNX only: the default-domain opset (default :data:`ONNX_OPSET`).
        seed: seeds fresh weights (a spec source, or a re-sized classifier).
        check: load the written files back and compare their outputs with effnas's model.

    Returns:
        What was written and the input it expects.

    Raises:
        ExportError: an unknown format, a bad option, an output path in a missing directory or
            with the wrong suffix, or ``onnx`` without the ``export`` extra.
        WeightsError, SpecError: a source that is not an effnas weights file or a buildable spec.
        RuntimeError: the written files disagree with effnas's model by more than effnas's
            own float32 rounding explains (a bug); nothing is written. Where the rounding does
            explain it, the files are written and ``warning`` says so.
    """
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    path = _check_out(out, format)
    model, origin, reset = load_export_model(source, num_classes=num_classes, seed=seed)
    options = _options(format, model, image_size, eval_mode, dynamic_size, opset)
    # Written into a private folder beside the output, checked there, then renamed into place.
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        started = time.perf_counter()
        loaded = _WRITERS[format](model, scratch / path.name, options)
        seconds = time.perf_counter() - started
        max_diff, how, warning = _check_written(model, loaded, format, options, check)
        written = sorted(scratch.iterdir(), key=lambda p: p.name != path.name)
        for file in written:
            os.replace(file, path.parent / file.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mean, std = _normalization()
    return ExportResult(
        format=format,
        files=tuple(str(path.parent / file.name) for file in written),
        name=model.spec.label,
        spec=model.spec.to_string(),
        num_classes=model.spec.num_classes,
        weights=origin,
        classifier_reset=reset,
        image_size=options["image_size"],
        dynamic_size=options["dynamic_size"],
        eval_mode=options["eval_mode"],
        opset=options["opset"],
        mean=mean,
        std=std,
        max_abs_diff=max_diff,
        check=how,
        warning=warning,
        seconds=seconds,
    )


def _check_written(
    model: EfficientNetV2,
    loaded: Callable | None,
    format: str,
    options: dict[str, Any],
    check: bool,
) -> tuple[float | None, str, str]:
    """Run the written files and compare with effnas: (max abs difference, how, warning)."""
    if not check:
        return None, "not checked (check=False)", ""
    if loaded is None:
        return None, "ONNX checker passed; not run (onnxruntime is not installed)", ""
    size, stride = options["image_size"], model.spec.total_stride
    # A dynamic-size graph is also run at a size other than the one it was exported at.
    sizes = [size, size + stride] if options["dynamic_size"] else [size]
    run = loaded()
    compared = [_compare(model, run, format, s) for s in sizes]
    shown = " and ".join(f"{s} x {s}" for s in sizes)
    how = f"{_CHECK_WORDS[format]} on {_CHECK_BATCH} random images of {shown}"
    warning = "; ".join(note for _, note in compared if note)
    return max(diff for diff, _ in compared), how, warning


_CHECK_WORDS = {
    "pytorch": "imported the file and compared with effnas's model",
    "torchscript": "loaded with torch.jit.load and compared with effnas's model",
    "onnx": "ONNX checker passed; ran it in onnxruntime and compared with effnas's model",
    "export": "loaded with torch.export.load and compared with effnas's model",
}
