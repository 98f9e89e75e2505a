"""``nas export``: plain PyTorch, torch.export, ONNX and TorchScript files that work without effnas.

The nets are the catalog's B0 and S and a spec sampled from the quick search's space, with
"trained" weights (random BatchNorm scales, shifts and statistics, so that every tensor shows in
the outputs) saved as effnas weights files. The Python, torch.export and TorchScript files are
loaded in a fresh Python process that cannot import effnas (no site hooks, so no editable install,
and no repo on the path), and their outputs compared with effnas's model; ONNX files run in
onnxruntime.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch

from nas.cli import main
from nas.errors import ExportError
from nas.export.writer import ONNX_OPSET, _compare, export_model
from nas.search import SearchConfig
from searchspace import build_model, load_arch, load_weights, save_weights
from tests import REPO

SIZE = 64  # B0 and S are exported at this image size to keep the tests quick
EFFNAS_PACKAGES = ("effnas", "searchspace", "nas", "scaling", "results")

# torch 2.10+ deprecates TorchScript and says so on every torch.jit.load; it still works.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")


def _quick_spec():
    """A spec from the quick search's space: the first seed's draw with both block kinds and SE."""
    space = SearchConfig.load(REPO / "configs" / "quick.yaml").space
    for seed in range(100):
        spec = space.sample(random.Random(seed))
        blocks = {stage.block for stage in spec.stages}
        if blocks == {"mbconv", "fused"} and any(stage.has_se for stage in spec.stages):
            return spec
    raise AssertionError("the quick space gave no spec with both block kinds and SE")


def _trained_weights(spec, path: Path) -> Path:
    """An effnas weights file whose BatchNorm layers are far from identity, as after training."""
    torch.manual_seed(1)
    model = build_model(spec)
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batchnorms:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.momentum = None  # cumulative averages: the statistics of exactly these batches
        model.train()
        size = min(spec.eval_resolution, SIZE)
        for _ in range(2):
            model(torch.randn(4, 3, size, size))
        for bn in batchnorms:
            bn.momentum = spec.bn_momentum
    return save_weights(model, path, source="test")


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Net name -> (effnas weights file, image size)."""
    folder = tmp_path_factory.mktemp("weights")
    specs = {"b0": load_arch("b0"), "s": load_arch("s"), "quick": _quick_spec()}
    return {
        name: (_trained_weights(spec, folder / f"{name}.pt"), min(spec.eval_resolution, SIZE))
        for name, spec in specs.items()
    }


def _images(count: int, size: int) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(7))


def _effnas_outputs(weights: Path, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        outputs = load_weights(weights)(images)  # load_weights returns eval mode
    # A net whose outputs are all near 0 would pass any tolerance: make sure these are not.
    assert outputs.std() > 0.1
    return outputs


def _export(capsys, *argv: str) -> str:
    assert main(["export", *argv]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote ")
    return out


# A child process with torch and torchvision but no effnas: run with -E -S (no PYTHONPATH, no
# site hooks such as effnas's editable install), given only the paths that hold no effnas.
_CHILD = """
import importlib, importlib.util, json, sys
from pathlib import Path

sys.path.extend(json.loads(sys.argv[1]))
import torch

tasks, results = json.loads(sys.argv[2]), {}
results["importable"] = [n for n in sys.argv[4:] if importlib.util.find_spec(n) is not None]
images = torch.load(sys.argv[3], weights_only=True)
for task in tasks:
    path = Path(task["file"])
    if task["format"] == "pytorch":
        sys.path.insert(0, str(path.parent))
        module = importlib.import_module(path.stem)
        net = module.load()
        task["default_training"] = net.training
        task["EVAL"] = module.EVAL
        task["keys"] = list(net.state_dict())
        task["shapes"] = [list(t.shape) for t in net.state_dict().values()]
    elif task["format"] == "export":
        # A torch.export program runs as it was exported (eval mode); it has no working .eval().
        net = torch.export.load(str(path)).module()
    else:
        net = torch.jit.load(str(path))
        task["default_training"] = net.training
    with torch.no_grad():
        task["outputs"] = (net if task["format"] == "export" else net.eval())(images).tolist()
    results[str(path)] = task
print(json.dumps(results))
"""


def _run_without_effnas(tmp_path: Path, tasks: list[dict], images: torch.Tensor) -> dict:
    torch.save(images, tmp_path / "images.pt")
    paths = [p for p in sys.path if p and not (Path(p) / "searchspace").exists()]
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    arguments = [json.dumps(paths), json.dumps(tasks), str(tmp_path / "images.pt")]
    done = subprocess.run(
        [sys.executable, "-E", "-S", str(script), *arguments, *EFFNAS_PACKAGES],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results.pop("importable") == []
    return results


@pytest.mark.parametrize("name", ["b0", pytest.param("s", marks=pytest.mark.slow), "quick"])
def test_pytorch_and_torchscript_files_match_effnas_without_effnas(capsys, tmp_path, nets, name):
    weights, size = nets[name]
    size_option = ["--image-size", str(size)]
    out = _export(
        capsys, str(weights), "--format", "pytorch", "--out", str(tmp_path / "net.py"), *size_option
    )
    assert f"wrote {tmp_path / 'net.py'} and {tmp_path / 'net.pth'}" in out
    assert f"N x 3 x {size} x {size}" in out and "(0.485, 0.456, 0.406)" in out
    out = _export(
        capsys,
        str(weights),
        "--format",
        "torchscript",
        "--out",
        str(tmp_path / "n.pt"),
        *size_option,
    )
    assert "eval mode" in out

    images = _images(3, size)
    expected = _effnas_outputs(weights, images)
    tasks = [
        {"format": "pytorch", "file": str(tmp_path / "net.py")},
        {"format": "torchscript", "file": str(tmp_path / "n.pt")},
    ]
    results = _run_without_effnas(tmp_path, tasks, images)
    effnas_state = load_weights(weights).state_dict()
    python_file, script = results[str(tmp_path / "net.py")], results[str(tmp_path / "n.pt")]
    # Same keys in the same order and the same shapes: weights move both ways.
    assert python_file["keys"] == list(effnas_state)
    assert python_file["shapes"] == [list(t.shape) for t in effnas_state.values()]
    assert python_file["EVAL"] is False and python_file["default_training"] is True
    assert script["default_training"] is False  # exported in eval mode by default
    for result in (python_file, script):
        difference = (torch.tensor(result["outputs"]) - expected).abs().max().item()
        print(f"{name} {result['format']}: max abs difference {difference:.3g}, ", end="")
        print(f"largest output {expected.abs().max().item():.3g}")
        assert difference <= 1e-5

    # The state dict beside the Python file loads into effnas's own model, strictly.
    model = build_model(load_weights(weights).spec).eval()
    model.load_state_dict(torch.load(tmp_path / "net.pth", weights_only=True))
    with torch.no_grad():
        assert torch.equal(model(images), expected)


def _onnx_case(capsys, tmp_path, nets, name, *extra: str):
    weights, size = nets[name]
    path = tmp_path / f"{name}.onnx"
    out = _export(capsys, str(weights), "--format", "onnx", "--out", str(path), *extra)
    assert f"ONNX opset {ONNX_OPSET}" in out and "'images'" in out
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {(o.domain, o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")} == {
        ("", ONNX_OPSET)
    }
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic batch
    assert dims[1].dim_value == 3
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return weights, size, dims, session


def _onnx_difference(session, weights, images) -> float:
    expected = _effnas_outputs(weights, images)
    got = torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
    difference = (got - expected).abs().max().item()
    print(f"onnx {list(images.shape)}: max abs difference {difference:.3g}, ", end="")
    print(f"largest output {expected.abs().max().item():.3g}")
    return difference


@pytest.mark.parametrize("name", ["b0", pytest.param("s", marks=pytest.mark.slow), "quick"])
def test_onnx_agrees_with_pytorch(capsys, tmp_path, nets, name):
    weights, size, dims, session = _onnx_case(
        capsys, tmp_path, nets, name, "--image-size", str(nets[name][1])
    )
    assert [d.dim_value for d in dims[2:]] == [size, size]  # fixed image size
    for batch in (1, 5):
        assert _onnx_difference(session, weights, _images(batch, size)) <= 1e-4


def test_onnx_dynamic_size(capsys, tmp_path, nets):
    weights, size, dims, session = _onnx_case(capsys, tmp_path, nets, "quick", "--dynamic-size")
    assert all(d.dim_param and not d.HasField("dim_value") for d in dims[2:])
    for height, width in ((size, size), (48, 80)):
        images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(3))
        assert _onnx_difference(session, weights, images) <= 1e-4


def _export_program(capsys, tmp_path, nets, name, *extra: str) -> tuple[Path, int, Path]:
    """``nas export --format export`` of one net: its weights, image size and .pt2 file."""
    weights, size = nets[name]
    path = tmp_path / f"{name}.pt2"
    out = _export(capsys, str(weights), "--format", "export", "--out", str(path), *extra)
    assert f"wrote {path}\n" in out and "(N dynamic" in out and "torch.export.load" in out
    return weights, size, path


@pytest.mark.parametrize("name", ["b0", pytest.param("s", marks=pytest.mark.slow), "quick"])
def test_export_program_matches_effnas_without_effnas(capsys, tmp_path, nets, name):
    size_option = ["--image-size", str(nets[name][1])]
    weights, size, path = _export_program(capsys, tmp_path, nets, name, *size_option)
    images = _images(3, size)
    expected = _effnas_outputs(weights, images)
    # As the writer's check: 1e-5 of the largest output (at least 1). The same kernels run, but
    # a fresh process may split the work over threads otherwise (the Python and TorchScript files
    # show a few 1e-6 there too).
    allowed = 1e-5 * max(1.0, expected.abs().max().item())
    # torch alone loads and runs it, in a process that cannot import effnas.
    result = _run_without_effnas(tmp_path, [{"format": "export", "file": str(path)}], images)
    difference = (torch.tensor(result[str(path)]["outputs"]) - expected).abs().max().item()
    print(f"{name} export: max abs difference {difference:.3g}, ", end="")
    print(f"largest output {expected.abs().max().item():.3g}")
    assert difference <= allowed

    extra = {"effnas.json": ""}  # torch.export.load fills it in
    module = torch.export.load(str(path), extra_files=extra).module()
    metadata = json.loads(extra["effnas.json"])
    assert metadata["effnas.spec"] == load_weights(weights).spec.to_string()
    assert metadata["effnas.image_size"] == str(size)
    with torch.no_grad():
        # The batch is dynamic, down to 1 (the program was traced with 2; the check runs 3).
        for batch in (1, 5):
            images = _images(batch, size)
            difference = (module(images) - _effnas_outputs(weights, images)).abs().max().item()
            assert difference <= allowed
        # The image size is fixed without --dynamic-size: another one fails the program's guard.
        with pytest.raises((AssertionError, RuntimeError)):
            module(_images(2, size + 32))


def test_export_program_dynamic_size(capsys, tmp_path, nets):
    weights, size, path = _export_program(capsys, tmp_path, nets, "quick", "--dynamic-size")
    stride = load_weights(weights).spec.total_stride
    module = torch.export.load(str(path)).module()
    # Down to one pixel above the total stride: at the stride the last feature map is 1 x 1,
    # which torch.export cannot keep dynamic.
    for batch, height, width in ((1, size, size), (2, 48, 80), (3, stride + 1, 2 * stride + 3)):
        images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(3))
        expected = _effnas_outputs(weights, images)
        with torch.no_grad():
            difference = (module(images) - expected).abs().max().item()
        print(f"export {list(images.shape)}: max abs difference {difference:.3g}")
        assert difference <= 1e-5
    result = export_model(weights, "export", tmp_path / "api.pt2", dynamic_size=True)
    assert result.files == (str(tmp_path / "api.pt2"),) and result.input_shape == "N x 3 x H x W"
    assert result.dynamic_size and result.eval_mode and result.opset is None
    assert result.max_abs_diff <= 1e-5 and f"{size + stride} x {size + stride}" in result.check


def test_eval_switch(capsys, tmp_path, nets):
    weights, _ = nets["quick"]
    _export(capsys, str(weights), "--format", "torchscript", "--out", str(tmp_path / "t.pt"))
    _export(
        capsys,
        str(weights),
        "--format",
        "torchscript",
        "--no-eval",
        "--out",
        str(tmp_path / "tt.pt"),
    )
    _export(capsys, str(weights), "--format", "pytorch", "--eval", "--out", str(tmp_path / "e.py"))
    assert torch.jit.load(str(tmp_path / "t.pt")).training is False
    assert torch.jit.load(str(tmp_path / "tt.pt")).training is True
    assert "EVAL = True" in (tmp_path / "e.py").read_text()


def test_python_api_spec_source_and_new_classifier(tmp_path, nets):
    result = export_model("b0", "pytorch", tmp_path / "b0.py", num_classes=7, image_size=SIZE)
    assert result.files == (str(tmp_path / "b0.py"), str(tmp_path / "b0.pth"))
    assert result.weights == "fresh (seed 0)" and result.num_classes == 7
    assert result.input_shape == f"N x 3 x {SIZE} x {SIZE}" and result.max_abs_diff == 0.0
    # The same spec and seed give the same weights.
    again = export_model("b0", "pytorch", tmp_path / "again.py", num_classes=7, image_size=SIZE)
    first = torch.load(tmp_path / "b0.pth", weights_only=True)
    second = torch.load(Path(again.files[1]), weights_only=True)
    assert all(torch.equal(first[key], second[key]) for key in first)

    weights, size = nets["quick"]
    result = export_model(weights, "torchscript", tmp_path / "q.pt", num_classes=3)
    assert result.classifier_reset and result.num_classes == 3
    with torch.no_grad():
        assert torch.jit.load(result.files[0])(_images(2, size)).shape == (2, 3)


def _bad_weights(tmp_path: Path) -> dict[str, Path]:
    plain = tmp_path / "plain.pt"
    torch.save({"conv.weight": torch.zeros(3)}, plain)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(
        "stem_channels: 8\nstages: [{block: fused, repeats: 1, kernel: 2, "
        "stride: 1, expand_ratio: 1, out_channels: 8}]\n"
    )
    return {"plain": plain, "garbage": garbage, "bad_yaml": bad_yaml}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["b0", "--format", "tflite", "--out", "{tmp}/b0.tfl"], "--format must be one of"),
        (["{plain}", "--format", "onnx", "--out", "{tmp}/x.onnx"], "not an effnas weights file"),
        (["{garbage}", "--format", "pytorch", "--out", "{tmp}/x.py"], "not a readable torch file"),
        (["b0", "--format", "onnx", "--out", "{tmp}/missing/b0.onnx"], "does not exist"),
        (["stem8,q2", "--format", "onnx", "--out", "{tmp}/x.onnx"], "unknown part 'q2'"),
        (["{bad_yaml}", "--format", "pytorch", "--out", "{tmp}/x.py"], "stages[0].kernel"),
        (["nosuchnet", "--format", "pytorch", "--out", "{tmp}/x.py"], "neither a catalog name"),
        (
            ["b0", "--format", "onnx", "--out", "{tmp}/x.onnx", "--num-classes", "0"],
            "--num-classes must be an integer of at least 1, got 0",
        ),
        (
            ["b0", "--format", "onnx", "--out", "{tmp}/x.onnx", "--image-size", "16"],
            "--image-size must be at least the net's total stride 32, got 16",
        ),
        (["b0", "--format", "onnx", "--no-eval", "--out", "{tmp}/x.onnx"], "--no-eval"),
        (["b0", "--format", "pytorch", "--dynamic-size", "--out", "{tmp}/x.py"], "--dynamic-size"),
        (["b0", "--format", "onnx", "--opset", "11", "--out", "{tmp}/x.onnx"], "--opset"),
        (["b0", "--format", "pytorch", "--out", "{tmp}/x.txt"], "must end in .py"),
        (["b0", "--format", "torchscript", "--out", "{tmp}"], "is a directory"),
        (["b0", "--format", "export", "--out", "{tmp}/b0.pt"], "must end in .pt2"),
        (["b0", "--format", "export", "--no-eval", "--out", "{tmp}/x.pt2"], "--no-eval"),
        (["b0", "--format", "export", "--opset", "18", "--out", "{tmp}/x.pt2"], "--opset"),
        (
            ["b0", "--format=export", "--dynamic-size", "--image-size=32", "--out={tmp}/x.pt2"],
            "above the net's total stride 32",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    work = tmp_path / "work"
    work.mkdir()
    names = {key: str(path) for key, path in _bad_weights(tmp_path).items()}
    argv = [arg.format(tmp=work, **names) for arg in argv]
    assert main(["export", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas export: error: "), captured.err
    assert message in lines[0]
    assert list(work.iterdir()) == []  # nothing written, not even a scratch folder


def test_onnx_without_the_extra_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    with pytest.raises(ExportError, match=r"pip install 'effnas\[export\]'"):
        export_model("b0", "onnx", tmp_path / "b0.onnx")
    assert main(["export", "b0", "--format", "onnx", "--out", str(tmp_path / "b0.onnx")]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_command_line_process_error_and_json(tmp_path, nets):
    command = [sys.executable, "-m", "nas.cli", "export"]
    done = subprocess.run(
        [*command, "b0", "--format", "onnx", "--out", str(tmp_path / "no" / "b0.onnx")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    weights, size = nets["quick"]
    done = subprocess.run(
        [*command, str(weights), "--format", "pytorch", "--out", str(tmp_path / "q.py"), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["files"] == [str(tmp_path / "q.py"), str(tmp_path / "q.pth")]
    assert (
        record["input_shape"] == f"N x 3 x {size} x {size}"
        and record["weights"] == f"from {weights}"
    )


class _Cancelling(torch.nn.Module):
    """Outputs 0.3, computed by a cancellation that float32 rounds badly and float64 not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = x.mean(dim=(1, 2, 3)) * 1e9  # float32 steps of 64 and more here
        return ((big + 0.3) - big).unsqueeze(1)


def test_check_tells_an_export_bug_from_a_net_that_amplifies_rounding():
    well_conditioned = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
    well_conditioned(torch.zeros(1, 3, 8, 8))
    assert _compare(well_conditioned, well_conditioned, "onnx", 8) == (0.0, "")
    with pytest.raises(RuntimeError, match="an export bug"):
        _compare(well_conditioned, lambda x: well_conditioned(x) * 1.01, "onnx", 8)
    cancelling = _Cancelling()
    diff, warning = _compare(cancelling, lambda x: cancelling(x) + 0.5, "onnx", 8)
    assert diff == pytest.approx(0.5) and "amplifies rounding" in warning


def test_onnx_without_onnxruntime_is_written_but_not_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = export_model(_quick_spec(), "onnx", tmp_path / "q.onnx")
    assert result.max_abs_diff is None and "onnxruntime is not installed" in result.check
    onnx.checker.check_model(str(tmp_path / "q.onnx"), full_check=True)
