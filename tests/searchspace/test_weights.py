"""Importing torchvision's EfficientNetV2 weights, checked against torchvision's own models.

torchvision builds S, M and L independently of effnas; its models, with random weights (nothing
is downloaded), are the reference: same parameter counts, and after an import the same outputs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from nas.cli import main
from searchspace import (
    WeightsError,
    build_model,
    count_parameters,
    load_arch,
    load_torchvision_weights,
    load_weights,
    read_weights,
    save_weights,
    torchvision_key_map,
)

_TORCHVISION = {
    "s": torchvision.models.efficientnet_v2_s,
    "m": torchvision.models.efficientnet_v2_m,
    "l": torchvision.models.efficientnet_v2_l,
}


def _torchvision_model(size: str, seed: int = 0) -> torch.nn.Module:
    """torchvision's net in eval mode with random weights *and* random BN statistics.

    Fresh BN layers are the identity (mean 0, var 1, scale 1, shift 0), which would hide a
    mixed-up BN; random statistics make every tensor count in the comparison.
    """
    torch.manual_seed(seed)
    model = _TORCHVISION[size]().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def torchvision_s():
    return _torchvision_model("s")


@pytest.fixture(scope="module")
def torchvision_m():
    return _torchvision_model("m", seed=1)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def torchvision_s_file(tmp_path_factory, torchvision_s):
    path = tmp_path_factory.mktemp("weights") / "efficientnet_v2_s.pth"
    torch.save(torchvision_s.state_dict(), path)
    return path


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# -- against torchvision ------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_imported_weights_give_torchvisions_outputs(size, images):
    reference = _torchvision_model(size)
    ours = build_model(load_arch(f"efficientnetv2-{size}")).eval()
    assert count_parameters(ours) == count_parameters(reference)
    # The key map is a bijection onto torchvision's state dict, in torchvision's own order.
    assert list(torchvision_key_map(ours).values()) == list(reference.state_dict())

    done = load_torchvision_weights(ours, reference.state_dict())

    assert done.loaded == len(reference.state_dict()) and done.skipped == ()
    assert done.parameters == count_parameters(reference)
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    assert expected.abs().max() > 0.1  # a real signal, not all zeros
    assert _max_diff(got, expected) <= 1e-4


def test_a_fresh_effnas_model_does_not_match_torchvision_before_import(torchvision_s, images):
    # Guards the test above against comparing two things that agree by construction.
    ours = build_model(load_arch("s")).eval()
    with torch.no_grad():
        assert _max_diff(ours(images), torchvision_s(images)) > 1e-2


# -- mismatches ---------------------------------------------------------------------------------


def test_weights_of_a_bigger_net_are_refused_at_their_first_extra_tensor(torchvision_m):
    # M has a third block in stage 1 where S has two: the first tensor without a place in S.
    model = build_model(load_arch("s"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as error:
        load_torchvision_weights(model, torchvision_m.state_dict())
    message = str(error.value)
    assert "\n" not in message
    assert "features.1.2.block.0.0.weight [24, 24, 3, 3]" in message
    assert "efficientnetv2-s" in message
    # Refused before anything was copied.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_weights_of_a_smaller_net_are_refused_at_their_first_missing_tensor(torchvision_s):
    with pytest.raises(WeightsError) as error:
        load_torchvision_weights(build_model(load_arch("m")), torchvision_s.state_dict())
    message = str(error.value)
    assert "features.1.2.block.0.0.weight is missing" in message
    assert "stages.0.2.conv_exp.0.weight needs shape [24, 24, 3, 3]" in message


def test_a_wrong_shape_names_both_keys_and_both_shapes(torchvision_s):
    state = dict(torchvision_s.state_dict())
    state["features.4.2.block.2.fc1.weight"] = torch.zeros(16, 512, 1, 1)
    with pytest.raises(WeightsError) as error:
        load_torchvision_weights(build_model(load_arch("s")), state)
    assert str(error.value) == (
        "the state dict does not fit efficientnetv2-s: tensor features.4.2.block.2.fc1.weight "
        "has shape [16, 512, 1, 1] but effnas stages.3.2.se.fc1.weight needs [32, 512, 1, 1]"
    )


def test_a_value_that_is_not_a_tensor_is_named(torchvision_s):
    state = dict(torchvision_s.state_dict())
    state["features.0.0.weight"] = [1.0, 2.0]
    with pytest.raises(WeightsError, match=r"features\.0\.0\.weight is a list, not a tensor"):
        load_torchvision_weights(build_model(load_arch("s")), state)


def test_missing_bn_batch_counters_are_tolerated(torchvision_s, images):
    state = {k: v for k, v in torchvision_s.state_dict().items() if "num_batches" not in k}
    ours = build_model(load_arch("s")).eval()
    done = load_torchvision_weights(ours, state)
    assert done.skipped and all(key.endswith("num_batches_tracked") for key in done.skipped)
    with torch.no_grad():
        assert _max_diff(ours(images), torchvision_s(images)) <= 1e-4


# -- the classifier -----------------------------------------------------------------------------


def test_another_number_of_classes_is_an_error_unless_the_classifier_may_be_fresh(
    torchvision_s, images
):
    ours = build_model(load_arch("s"), num_classes=10).eval()
    with pytest.raises(WeightsError, match=r"classifier\.1\.weight .*strict_classifier=False"):
        load_torchvision_weights(ours, torchvision_s.state_dict())

    fresh = ours.classifier.weight.detach().clone()
    done = load_torchvision_weights(ours, torchvision_s.state_dict(), strict_classifier=False)

    assert done.skipped == ("classifier.weight", "classifier.bias")
    assert torch.equal(ours.classifier.weight, fresh)
    with torch.no_grad():
        # Everything up to the classifier is torchvision's.
        features = torchvision_s.avgpool(torchvision_s.features(images)).flatten(1)
        ours_features = ours.pool(ours.forward_features(images)).flatten(1)
    assert _max_diff(ours_features, features) <= 1e-4


def test_a_matching_classifier_is_loaded_even_when_it_may_be_fresh(torchvision_s, images):
    ours = build_model(load_arch("s")).eval()
    done = load_torchvision_weights(ours, torchvision_s.state_dict(), strict_classifier=False)
    assert done.skipped == ()
    with torch.no_grad():
        assert _max_diff(ours(images), torchvision_s(images)) <= 1e-4


# -- files --------------------------------------------------------------------------------------


class _NotPlainData:
    pass


def _write_bad_file(kind: str, path, good_file) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"not a torch file" * 8)
    elif kind == "text":  # e.g. /etc/passwd: the unpickler fails with an IndexError
        path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    elif kind == "truncated":
        path.write_bytes(good_file.read_bytes()[:50_000])
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "empty dict":
        torch.save({}, path)
    elif kind == "pickled object":
        torch.save({"features.0.0.weight": _NotPlainData()}, path)
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("empty", "is empty or cut short"),
        ("garbage", "is not a readable torch file"),
        ("text", "is not a readable torch file"),
        ("truncated", "is not a readable torch file"),
        ("tensor", "must hold a state dict (key -> tensor), got Tensor"),
        ("empty dict", "must hold a state dict (key -> tensor), got an empty dict"),
        ("pickled object", "holds pickled objects, refused with weights_only=True"),
    ],
)
def test_unreadable_files_get_one_line_naming_the_file(
    kind, expected, tmp_path, torchvision_s_file
):
    path = tmp_path / "bad.pth"
    _write_bad_file(kind, path, torchvision_s_file)
    with pytest.raises(WeightsError) as error:
        load_torchvision_weights(build_model(load_arch("s")), path)
    message = str(error.value)
    assert "\n" not in message and len(message) < 300
    assert str(path) in message and expected in message


def test_effnas_weights_file_round_trip(tmp_path, torchvision_s, images):
    ours = build_model(load_arch("s")).eval()
    load_torchvision_weights(ours, torchvision_s.state_dict())
    path = save_weights(ours, tmp_path / "sub" / "s.pt", source="test")

    # An ordinary torch file of plain data: readable with weights_only=True.
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["spec"] == ours.spec.to_dict() and payload["source"] == "test"
    spec, state = read_weights(path)
    assert spec == ours.spec and spec.name == "efficientnetv2-s" and len(state) == 782

    loaded = load_weights(path)
    assert not loaded.training
    with torch.no_grad():
        assert _max_diff(loaded(images), torchvision_s(images)) <= 1e-4
    assert not list(tmp_path.rglob("*.partial"))


def test_effnas_weights_file_whose_tensors_do_not_fit_its_spec_is_refused(tmp_path, tiny_spec):
    path = save_weights(build_model(tiny_spec), tmp_path / "tiny.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.0.weight"] = torch.zeros(1)
    torch.save(payload, path)
    with pytest.raises(WeightsError, match=r"tensor head\.0\.weight has shape \[1\]"):
        load_weights(path)


def test_loading_the_wrong_kind_of_file_says_which_loader_to_use(tmp_path, torchvision_s_file):
    with pytest.raises(WeightsError, match="looks like a torchvision state dict"):
        load_weights(torchvision_s_file)
    effnas_file = save_weights(build_model(load_arch("s")), tmp_path / "s.pt")
    with pytest.raises(WeightsError, match="is an effnas weights file"):
        load_torchvision_weights(build_model(load_arch("s")), effnas_file)


# -- the command --------------------------------------------------------------------------------


def test_nas_weights_import_writes_a_file_that_reproduces_torchvision(
    tmp_path, torchvision_s, torchvision_s_file, images, capsys
):
    out = tmp_path / "effnas-s.pt"
    argv = ["weights", "import", "torchvision", str(torchvision_s_file)]
    code = main([*argv, "--arch", "efficientnetv2-s", "--out", str(out)])

    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    assert "imported 782 tensors (21,458,488 parameters)" in captured.out
    assert f"wrote {out}" in captured.out
    with torch.no_grad():
        assert _max_diff(load_weights(out)(images), torchvision_s(images)) <= 1e-4


def test_nas_weights_import_with_num_classes_keeps_a_fresh_classifier(
    tmp_path, torchvision_s_file, capsys
):
    out = tmp_path / "effnas-s10.pt"
    argv = ["weights", "import", "torchvision", str(torchvision_s_file), "--arch", "s"]
    assert main([*argv, "--out", str(out), "--num-classes", "10"]) == 0
    assert "left at their initialization: 2 tensors (classifier.weight" in capsys.readouterr().out
    spec, state = read_weights(out)
    assert spec.num_classes == 10 and state["classifier.weight"].shape == (10, 1280)


@pytest.mark.parametrize(
    ("arch", "tensor"),
    [
        # M's file for S: M's third stage-1 block has no place in S.
        ("efficientnetv2-s", "features.1.2.block.0.0.weight [24, 24, 3, 3] has no place"),
        # S's file for M: M's third stage-1 block is missing from it.
        ("efficientnetv2-m", "features.1.2.block.0.0.weight is missing"),
    ],
)
def test_nas_weights_import_of_a_mismatching_file_exits_2_naming_the_tensor(
    arch, tensor, tmp_path, torchvision_s_file, torchvision_m, capsys
):
    if arch == "efficientnetv2-s":
        source = tmp_path / "efficientnet_v2_m.pth"
        torch.save(torchvision_m.state_dict(), source)
    else:
        source = torchvision_s_file
    out = tmp_path / "out.pt"
    argv = ["weights", "import", "torchvision", str(source), "--arch", arch, "--out", str(out)]

    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and tensor in lines[0] and str(source) in lines[0]
    assert lines[0].startswith("nas weights: error: ")
    assert captured.out == "" and not out.exists()


def test_nas_weights_import_from_the_shell_has_no_traceback(tmp_path):
    missing = tmp_path / "missing.pth"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.cli",
            "weights",
            "import",
            "torchvision",
            str(missing),
            "--arch",
            "s",
            "--out",
            str(tmp_path / "out.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    # Refused as the arguments are parsed, naming the argument.
    assert result.stderr == (
        f"nas weights import: error: argument file: '{missing}' does not exist\n"
    )
