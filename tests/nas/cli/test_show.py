"""``nas show``: its parameter and FLOP counts against torchvision's EfficientNetV2-S."""

from __future__ import annotations

import json

import torchvision

from nas.cli import main
from searchspace import build_model, count_flops, count_parameters


def test_show_json_of_s_at_384_matches_torchvisions_s(capsys):
    assert main(["show", "efficientnetv2-s", "--resolution", "384", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)

    reference = torchvision.models.efficientnet_v2_s()  # random weights, nothing downloaded
    assert info["params"] == count_parameters(reference)
    # The same counter (fvcore, one multiply-add = one FLOP) on the independent implementation.
    assert info["flops"] == count_flops(reference, 384)
    # And the published figures (shared/REFERENCE.md section 3): 21.5M parameters, 8.4B FLOPs.
    assert round(info["params"] / 1e6, 1) == 21.5
    assert round(info["flops"] / 1e9, 1) == 8.4
    assert info["name"] == "efficientnetv2-s" and info["resolution"] == 384
    assert [stage["repeats"] for stage in info["stages"]] == [2, 4, 4, 6, 9, 15]


def test_show_yaml_with_num_classes_prints_the_table(tmp_path, tiny_spec, capsys):
    path = tiny_spec.save(tmp_path / "tiny.yaml")
    assert main(["show", str(path), "--num-classes", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("tiny  (stem8,f1k3s1e1c8,")
    assert "Fused-MBConv" in out and "MBConv" in out and "classes     3" in out
    params = count_parameters(build_model(tiny_spec, num_classes=3))
    assert f"parameters  {params:,}" in out


def test_show_list_names_the_catalog(capsys):
    assert main(["show", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {f"efficientnetv2-{n}" for n in ("b0", "s", "m", "l", "xl")} <= set(names)


def test_show_resolution_below_the_total_stride_is_one_line(capsys):
    assert main(["show", "efficientnetv2-s", "--resolution", "16"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "nas show: error: --resolution must be at least the net's total stride 32, got 16\n"
    )
