"""bench/end_to_end.py: the baselines' adaptation, the nas train settings every net shares, and
the headline's reading of the curves (the benchmark itself takes hours: not run here)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from nas.train.loop import train_step
from nas.train.optim import build_optimizer, make_loss
from nas.train.recipe import Recipe
from searchspace import ArchSpec, StageSpec
from tests import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("end_to_end", REPO / "bench" / "end_to_end.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _stem_output_size(model: nn.Module, size: int) -> int:
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    sizes = []
    handle = stem.register_forward_hook(lambda module, args, output: sizes.append(output.shape))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    handle.remove()
    return sizes[0][-1]


@pytest.mark.parametrize(
    "name",
    [
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "resnet18",
        "efficientnet_b0",
        "efficientnetv2-b0",
    ],
)
def test_each_baseline_adapted_to_10_classes_at_28_px_builds_and_trains_a_step(bench, name):
    assert name in bench.BASELINES
    torch.manual_seed(0)
    model = bench.baseline(name)
    assert _stem_output_size(bench.BASELINES[name](10), 28) == 14  # as built: stride-2 stem
    assert _stem_output_size(model, 28) == 28  # adapted: the stem keeps the 28 px
    images = torch.randn(4, 3, 28, 28)
    labels = torch.tensor([0, 3, 7, 9])
    model.train()
    with torch.no_grad():
        assert model(images).shape == (4, 10)
    recipe = Recipe(batch_size=4, lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    loss = train_step(
        model,
        images,
        labels,
        build_optimizer(model, recipe),
        make_loss(recipe),
        device=torch.device("cpu"),
        precision="fp32",
    )
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_adapt_refuses_a_net_without_a_stride_2_stem(bench):
    with pytest.raises(ValueError, match="not a stride-2 stem"):
        bench.adapt(nn.Sequential(nn.Conv2d(3, 8, 3, stride=1), nn.Flatten()))


def _tiny_spec(path, name: str, size: int) -> None:
    ArchSpec(
        name=name,
        stem_channels=8,
        stages=(StageSpec("fused", repeats=1, kernel=3, stride=2, expand_ratio=1, out_channels=8),),
        head_channels=16,
        num_classes=10,
        train_resolution=size,
        eval_resolution=size,
    ).save(path)


def test_every_baseline_trains_with_the_found_bases_nas_train_settings(bench, tmp_path):
    _tiny_spec(tmp_path / "best.yaml", "base", 28)
    _tiny_spec(tmp_path / "base-s.yaml", "base-s", 48)
    args = argparse.Namespace(
        epochs=8,
        stages=4,
        device="cpu",
        train_images=1000,
        heldout_fraction=None,
        smoke=False,
        nets=None,
        seeds=[0],
    )
    nets = bench.nets_to_train(tmp_path / "best.yaml", tmp_path / "base-s.yaml", args, tmp_path)
    assert [net.name for net in nets] == ["base", "S", "S-fixed", *bench.BASELINES]
    configs = {net.name: bench.config_of(net.argv)[1] for net in nets}
    base = configs["base"].to_dict()
    for name in bench.BASELINES:
        assert configs[name].to_dict() == base  # same recipe, schedule, data, image size, epochs
    assert configs["base"].schedule.stages == 4 and configs["base"].max_train_images == 1000
    assert configs["base"].schedule.image_size.max == 28
    assert configs["S"].schedule.image_size.max == 48
    assert configs["S-fixed"].schedule.stages == 1 and configs["S-fixed"].epochs == 8


def _result(name, times, accuracies, baseline=None):
    return {
        "name": name,
        "baseline": baseline,
        "parameters": 1e6,
        "time_metric": "train_cpu_seconds",
        "epochs": len(times),
        "test_images": 10000,
        "final_test_accuracy": accuracies[-1],
        "curve": [
            {"epoch": i + 1, "train_cpu_seconds": t, "test_accuracy": a}
            for i, (t, a) in enumerate(zip(times, accuracies, strict=True))
        ],
    }


def test_headline_reads_the_curves_at_epoch_ends_both_ways(bench):
    found = _result("S", [10, 20, 30], [0.80, 0.90, 0.89])
    other = _result("resnet18", [25, 50, 75], [0.85, 0.88, 0.92], baseline="resnet18")
    assert bench.time_to(found, 0.90) == 20  # the first epoch end at 90%, not the last
    assert bench.time_to(found, 0.92) is None
    assert bench.accuracy_at(other, 20) is None  # no epoch done yet
    assert bench.accuracy_at(other, 60) == 0.88
    lines = bench.summary({"S": found, "resnet18": other}, {"trials": 12, "trial_seconds": 15.0})
    text = "\n".join(lines)
    assert "as a share of S's training time: 50.0%" in text
    # S's final 89% is first reached at 20 s, when resnet18 had no epoch done; resnet18 needs
    # 75 s for 89%, and ends at 92%, which S never reaches (at 75 s S stands at its final 89%).
    assert "## S: 89.00% after 20 s" in text
    assert "| resnet18 | - | 75 s | 92.00% | 89.00% | never |" in text


def test_a_second_seed_trains_in_its_own_run_directory_with_nas_trains_seed(bench, tmp_path):
    _tiny_spec(tmp_path / "best.yaml", "base", 28)
    _tiny_spec(tmp_path / "base-s.yaml", "base-s", 48)
    args = bench.parse_args(["--seeds", "0,3", "--nets", "resnet18,S", "--epochs", "2"])
    nets = bench.nets_to_train(tmp_path / "best.yaml", tmp_path / "base-s.yaml", args, tmp_path)
    assert [(net.name, net.seed, net.run_name) for net in nets] == [
        ("S", 0, "S"),
        ("resnet18", 0, "resnet18"),
        ("S", 3, "S-seed3"),
        ("resnet18", 3, "resnet18-seed3"),
    ]
    parsed = [bench.config_of(net.argv)[1] for net in nets]
    assert [config.seed for config in parsed] == [0, 0, 3, 3]
    assert parsed[1].to_dict() == {**parsed[3].to_dict(), "seed": 0}  # only the seed differs
    assert nets[3].argv[nets[3].argv.index("--out") + 1] == str(tmp_path / "resnet18-seed3")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0,x"], "--seeds: not a comma-separated list of integers: '0,x'"),
        (["--seeds", "1,1"], "--seeds: distinct seeds of 0 or more, not [1, 1]"),
        (["--nets", "S,resnet50"], "--nets: unknown net 'resnet50'"),
    ],
)
def test_bad_seeds_or_nets_are_one_line_and_exit_2(bench, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_summary_averages_each_nets_seeds_and_pools_their_spread(bench, tmp_path):
    runs = {
        "S": [
            _result("S", [10, 20], [0.80, 0.86]) | {"seed": 0},
            _result("S", [12, 22], [0.82, 0.88]) | {"seed": 1},
        ],
        "resnet18": [
            _result("resnet18", [30, 60], [0.85, 0.90], baseline="resnet18") | {"seed": 0},
            _result("resnet18", [30, 60], [0.85, 0.91], baseline="resnet18") | {"seed": 1},
            _result("resnet18", [30, 60], [0.85, 0.95], baseline="resnet18") | {"seed": 2},
        ],
        "mobilenet_v3_small": [_result("mobilenet_v3_small", [5, 9], [0.7, 0.75])],
    }
    for name, results in runs.items():
        for result in results:
            run = tmp_path / bench.run_name(name, result.get("seed", 0))
            run.mkdir()
            (run / "result.json").write_text(json.dumps(result))
    collected = bench.collect(tmp_path)
    assert list(collected) == ["S", "mobilenet_v3_small", "resnet18"]  # the benchmark's order
    assert [r["seed"] for r in collected["resnet18"]] == [0, 1, 2]
    mean = bench.mean_over_seeds(collected["S"])
    assert mean["finals"] == [0.86, 0.88] and mean["final_test_accuracy"] == pytest.approx(0.87)
    assert [row["train_cpu_seconds"] for row in mean["curve"]] == [11, 21]
    assert [row["test_accuracy"] for row in mean["curve"]] == pytest.approx([0.81, 0.87])
    sd, freedom = bench.seed_spread(collected)
    # Pooled over S (1 degree of freedom) and resnet18 (2), by numpy's own variances.
    pooled = (np.var([0.86, 0.88], ddof=1) * 1 + np.var([0.90, 0.91, 0.95], ddof=1) * 2) / 3
    assert freedom == 3 and sd == pytest.approx(np.sqrt(pooled))
    results = {name: bench.mean_over_seeds(seeds) for name, seeds in collected.items()}
    text = "\n".join(bench.summary(results, {"trials": 2, "trial_seconds": 1.0}, (sd, freedom)))
    assert "| S | 1.00M | 87.00% | 86.00% (seed 0), 88.00% (seed 1) |" in text
    assert f"standard deviation of {sd:.2%}" in text and "3 degrees of freedom" in text
    with pytest.raises(ValueError, match="different numbers of epochs"):
        bench.mean_over_seeds([collected["S"][0], _result("S", [1, 2, 3], [0.1, 0.2, 0.3])])


def test_the_diagnostic_is_efficientnet_b0_without_stochastic_depth_and_trains_only_by_name(
    bench, tmp_path
):
    from torchvision.ops import StochasticDepth

    plain, diagnostic = bench.baseline("efficientnet_b0"), bench.baseline("efficientnet_b0-nodrop")
    rates = [m.p for m in plain.modules() if isinstance(m, StochasticDepth)]
    assert max(rates) > 0  # torchvision's default drops residual branches
    assert [m.p for m in diagnostic.modules() if isinstance(m, StochasticDepth)] == [0.0] * len(
        rates
    )
    shapes = [p.shape for p in plain.parameters()]
    assert [p.shape for p in diagnostic.parameters()] == shapes  # nothing else differs
    _tiny_spec(tmp_path / "best.yaml", "base", 28)
    _tiny_spec(tmp_path / "base-s.yaml", "base-s", 48)
    nets = bench.nets_to_train(
        tmp_path / "best.yaml", tmp_path / "base-s.yaml", bench.parse_args([]), tmp_path
    )
    assert "efficientnet_b0-nodrop" not in [net.name for net in nets]
    args = bench.parse_args(["--nets", "efficientnet_b0-nodrop,efficientnet_b0"])
    nets = bench.nets_to_train(tmp_path / "best.yaml", tmp_path / "base-s.yaml", args, tmp_path)
    assert [(net.name, net.baseline) for net in nets] == [
        ("efficientnet_b0", "efficientnet_b0"),
        ("efficientnet_b0-nodrop", "efficientnet_b0-nodrop"),
    ]
    configs = [bench.config_of(net.argv)[1].to_dict() for net in nets]
    assert configs[0] == configs[1]  # the same nas train settings
