"""``nas fidelity``: the plan, the verdict, the command end to end, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from scipy import stats

from nas.cli import main
from nas.errors import ConfigError
from nas.search.fidelity import (
    EVALUATIONS_FILE,
    MIN_NETS,
    PAIRS,
    plan_fidelity,
    sample_specs,
    verdict,
)
from results.correlation import RankCorrelation
from searchspace.profile import spec_parameters
from tests.nas.cli.test_malformed import QUICK, _one_line
from tests.nas.search.helpers import SMALL_SPACE, small_config

TINY = {
    "study": "tiny",
    "dataset": "synthetic:400",
    "image_size": 16,
    "batch_size": 32,
    "epochs": 1,
    "trials": 4,
    "concurrent": 2,
    "resources": {"cpus": 1, "gpus": 0},
    "early_stopping": False,
    "evaluation": {"timing_clock": "cpu", "timing_steps": 3, "timing_warmup": 1},
    "space": {**SMALL_SPACE, "train_resolution": 24, "eval_resolution": 24},
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path / "cache"))
    return tmp_path


# -- the plan --------------------------------------------------------------------------------------


def test_plan_defaults_to_four_times_the_epochs_at_the_full_size(tmp_path):
    config = small_config(tmp_path, image_size=16, epochs=2)
    plan = plan_fidelity(config, specs=5)
    assert (plan.long_epochs, plan.long_image_size, plan.seed) == (8, 32, config.seed)
    assert plan.proxy == config.eval_config()  # exactly what a search trial runs
    assert (plan.long.epochs, plan.long.image_size) == (8, 32)
    assert plan.long.timing_clock == plan.proxy.timing_clock and plan.long.lr == plan.proxy.lr
    assert plan.describe(plan.proxy) == "2 epochs at 16 px"
    assert len({spec.hash for spec in plan.specs}) == 5


def test_sample_is_distinct_and_seeded(tmp_path):
    space = small_config(tmp_path).space
    first = sample_specs(space, 10, seed=3)
    assert first == sample_specs(space, 10, seed=3) != sample_specs(space, 10, seed=4)
    assert len({spec.hash for spec in first}) == 10
    with pytest.raises(ConfigError, match=f"more than the space's {space.size} nets"):
        sample_specs(space, space.size + 1, seed=0)


def test_the_sample_keeps_within_the_cheap_constraints(tmp_path):
    # The nets a search would train: none above max_params.
    config = small_config(tmp_path, constraints={"max_params": 10_000})
    plan = plan_fidelity(config, specs=5)
    assert all(spec_parameters(spec) <= 10_000 for spec in plan.specs)
    # Only four nets kept: asking for five is one line, not an endless draw.
    chosen = {spec.hash for spec in sample_specs(config.space, 4, seed=0)}
    kept = sample_specs(config.space, 4, seed=0, keep=lambda spec: spec.hash in chosen)
    assert {spec.hash for spec in kept} == chosen
    with pytest.raises(ConfigError, match=r"--specs 5: only 4 distinct nets .* constraints"):
        sample_specs(config.space, 5, seed=0, keep=lambda spec: spec.hash in chosen)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"specs": 2}, "--specs"),
        ({"long_epochs": 0}, "--long-epochs"),
        ({"long_image_size": 2}, "--long-image-size must be at least the space's total stride"),
        ({"long_epochs": 1, "long_image_size": 32}, "is the proxy itself"),
        ({"resamples": 5}, "--resamples"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_bad_plans_name_the_flag(tmp_path, kwargs, words):
    config = small_config(tmp_path, image_size=32, epochs=1)
    with pytest.raises(ConfigError, match=words):
        plan_fidelity(config, **kwargs)


# -- the verdict -----------------------------------------------------------------------------------


def _correlation(n: int, tau: float, low: float, high: float) -> RankCorrelation:
    return RankCorrelation(n, tau, low, high, tau, low, high, 0.95, 1000)


def _verdict(accuracy: RankCorrelation, accuracies: list[float], heldout: int = 500) -> str:
    correlations = dict.fromkeys(PAIRS, _correlation(12, 0.9, 0.8, 1.0))
    correlations["accuracy"] = accuracy
    return verdict("2 epochs at 32 px", "8 epochs at 40 px", correlations, accuracies, heldout)


SPREAD = [0.90, 0.94, 0.97, 0.99]  # 3.4 points of spread: far above the sampling error


@pytest.mark.parametrize(
    ("accuracy", "accuracies", "advice"),
    [
        (_correlation(12, 0.71, 0.52, 0.86), SPREAD, "trust it for ranking"),
        (_correlation(12, 0.6, 0.2, 0.9), SPREAD, "the interval is wide"),
        (_correlation(12, 0.2, -0.1, 0.5), SPREAD, "too short to trust: try more epochs"),
        (
            _correlation(12, 0.2, -0.1, 0.5),
            [0.970, 0.972, 0.968],
            "do not tell these nets apart (their accuracies spread 0.16 points",
        ),
        (_correlation(MIN_NETS - 1, 0.9, 0.8, 1.0), SPREAD, "too few nets"),
    ],
)
def test_verdict_is_one_sentence_with_the_figure_and_the_advice(accuracy, accuracies, advice):
    sentence = _verdict(accuracy, accuracies)
    assert sentence.startswith("With 2 epochs at 32 px, the proxy ranks")
    assert f"{accuracy.tau:.2f} [{accuracy.tau_low:.2f}, {accuracy.tau_high:.2f}]" in sentence
    assert advice in sentence and "\n" not in sentence and sentence.endswith(".")
    assert "its step time ranks their real time per step with tau 0.90 [0.80, 1.00]" in sentence


def test_verdict_with_nothing_to_rank():
    nan = _correlation(2, math.nan, math.nan, math.nan)
    assert "nothing to rank" in _verdict(nan, [0.9, 0.8])


# -- the command -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_end_to_end_then_a_rerun_reuses_every_evaluation(workdir, capsys):
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "runs_dir": str(workdir / "runs")}))
    argv = ["fidelity", str(path), "--specs", "4", "--long-epochs", "2", "--resamples", "500"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    out = workdir / "runs" / "tiny-fidelity"
    assert json.loads((out / "fidelity.json").read_text()) == result
    assert (out / "fidelity.png").stat().st_size > 10_000
    assert (result["proxy"], result["long"]) == ("1 epoch at 16 px", "2 epochs at 24 px")
    assert result["heldout_images"] == 40 and len(result["rows"]) == 4
    assert "[8/8]" in captured.err  # progress on stderr with --json
    lines = (out / EVALUATIONS_FILE).read_text().splitlines()
    assert sorted(json.loads(line)["role"] for line in lines) == ["long"] * 4 + ["proxy"] * 4
    rows = result["rows"]
    for row in rows:
        # synthetic:400 less 40 held-out and 40 test images: 320 to train on, 10 steps an epoch
        assert row["failure"] == "" and row["long_steps"] == 2 * (320 // 32)
        assert 0 <= row["proxy_accuracy"] <= 1 and row["long_ms_per_step"] > 0
    for key, (x, y, _) in PAIRS.items():  # the reported figures are the rows' own
        found = result["correlations"][key]
        xs, ys = [row[x] for row in rows], [row[y] for row in rows]
        expected = stats.kendalltau(xs, ys).statistic
        if math.isnan(expected):  # a constant figure (4 nets may tie): no correlation
            assert found["tau"] is None
        else:
            assert found["tau"] == pytest.approx(expected)
    assert result["verdict"].startswith("With 1 epoch at 16 px, the proxy ranks 4 nets as 2 epochs")

    # Run again: every evaluation is reused (no Ray, nothing trained), the same figures come out.
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "reusing 8 evaluations" in text and "[1/8]" not in text
    assert result["verdict"] in text
    assert len((out / EVALUATIONS_FILE).read_text().splitlines()) == 8


# -- bad input -------------------------------------------------------------------------------------

# A malformed config: tests/nas/cli/test_malformed.py gives `nas fidelity` its whole corpus.


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--specs", "2"], ["--specs", "2"]),
        (["--specs", "many"], ["--specs", "'many'"]),
        (["--long-epochs", "0"], ["--long-epochs", "0"]),
        (["--long-epochs", "2", "--long-image-size", str(QUICK["image_size"])], ["proxy itself"]),
        (["--concurrent", "0"], ["concurrent", "0"]),
        (["--out", "a-file"], ["--out", "a-file", "is a file"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(flags, words, workdir, capsys):
    (workdir / "a-file").write_text("")
    path = workdir / "search.yaml"
    path.write_text(yaml.safe_dump({**QUICK, "runs_dir": str(workdir / "runs"), "epochs": 2}))
    _one_line(capsys, ["fidelity", str(path), *flags], workdir, words)
