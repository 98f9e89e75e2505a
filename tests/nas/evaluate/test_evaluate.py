"""Evaluating one candidate: the record, learning on mnist5k, failures, the reward, the CLI."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from PIL import Image

from nas.cli import main
from nas.errors import ConfigError
from nas.evaluate import EvalConfig, EvalResult, clear_reference_cache, evaluate_candidate, reward
from results.schema import RECORD_KEYS
from searchspace import build_model, count_flops, count_parameters, load_arch
from searchspace.errors import EffnasError

TINY_REFERENCE = "stem8,f1k3s1e1c8,f1k3s2e4c16,head32"
# The result-record schema that stored studies hold, written out independently of
# results.schema (which the record, the study frame and the reports derive from).
SCHEMA = [
    "spec",
    "hash",
    "name",
    "accuracy",
    "test_accuracy",
    "step_time_ms",
    "step_time_spread_ms",
    "reference_step_time_ms",
    "step_time_norm",
    "images_per_second",
    "params",
    "params_norm",
    "flops",
    "flops_norm",
    "peak_memory_mb",
    "reward",
    "reward_cost",
    "device",
    "node",
    "epochs",
    "image_size",
    "timing_image_size",
    "batch_size",
    "train_seconds",
    "duration_s",
    "status",
    "failure",
    "violations",
]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path / "cache"))
    clear_reference_cache()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared test machine: avoid OpenMP oversubscription stalls
    yield
    torch.set_num_threads(threads)
    clear_reference_cache()


def quick_config(**changes) -> EvalConfig:
    settings = {
        "dataset": "synthetic:200",
        "image_size": 16,
        "batch_size": 32,
        "epochs": 1,
        "device": "cpu",
        "timing_steps": 3,
        "timing_warmup": 1,
        "reference": TINY_REFERENCE,
    }
    return EvalConfig(**{**settings, **changes})


def test_the_step_is_timed_at_the_timing_size_not_the_proxy_size(tiny_spec, monkeypatch):
    """The candidate's and the reference's steps are timed, and FLOPs counted, at
    ``timing_image_size``; the brief training (and so its accuracy) stays at ``image_size``."""
    import nas.evaluate.candidate as candidate
    import nas.evaluate.reference as reference
    from nas.evaluate import timing

    timed = []

    def recording(model, setup):
        result = timing.time_train_step(model, setup)
        timed.append((count_parameters(model), setup.image_size, result.median_ms))
        return result

    monkeypatch.setattr(candidate, "time_train_step", recording)
    monkeypatch.setattr(reference, "time_train_step", recording)
    records = {}
    for size in (16, 40):
        clear_reference_cache()
        timed.clear()
        records[size] = evaluate_candidate(tiny_spec, quick_config(timing_image_size=size))
        record = records[size].to_dict()
        assert {image_size for _, image_size, _ in timed} == {size}  # candidate and reference
        assert record["image_size"] == 16 and record["timing_image_size"] == size
        spec_params = count_parameters(build_model(tiny_spec.replace(num_classes=10)))
        mine = [median for params, _, median in timed if params == spec_params]
        assert record["step_time_ms"] == mine[-1]
        assert record["flops"] == count_flops(build_model(tiny_spec), size)
    # Same seed, same proxy size: the same trained net, whatever size the step was timed at.
    assert records[16].accuracy == records[40].accuracy
    assert records[16].test_accuracy == records[40].test_accuracy


def test_record_has_exactly_the_schema_and_consistent_figures(tiny_spec):
    config = quick_config(reward_w=-0.1, reward_v=-0.02, epochs=2)
    reports = []
    result = evaluate_candidate(
        tiny_spec, config, on_epoch_end=lambda epoch, metrics: reports.append(metrics)
    )
    record = result.to_dict()
    assert sorted(record) == sorted(SCHEMA) and list(record) == list(RECORD_KEYS)
    json.dumps(record)  # storable as Optuna user attributes
    assert EvalResult.from_dict(record) == result

    spec = tiny_spec.replace(num_classes=10)
    assert (record["spec"], record["hash"]) == (spec.to_string(), spec.hash)
    assert record["name"] == "tiny"
    assert (record["status"], record["failure"]) == ("ok", "")
    assert 0.0 <= record["accuracy"] <= 1.0 and 0.0 <= record["test_accuracy"] <= 1.0
    assert record["timing_image_size"] == 16  # none given: the training size
    assert record["params"] == count_parameters(build_model(spec))
    assert record["flops"] == count_flops(build_model(spec), 16)
    reference = load_arch(TINY_REFERENCE).replace(num_classes=10)
    assert record["params_norm"] == pytest.approx(
        record["params"] / count_parameters(build_model(reference))
    )
    assert record["step_time_norm"] == pytest.approx(
        record["step_time_ms"] / record["reference_step_time_ms"]
    )
    assert record["images_per_second"] == pytest.approx(32 / (record["step_time_ms"] / 1000))
    assert record["flops_norm"] == pytest.approx(
        record["flops"] / count_flops(build_model(reference), 16)
    )
    assert record["reward_cost"] == "step_time"
    expected = (
        record["accuracy"]
        * record["step_time_norm"] ** -0.1
        * record["params_norm"] ** -0.02
    )  # fmt: skip
    assert record["reward"] == pytest.approx(expected)
    assert record["step_time_spread_ms"] >= 0 and record["peak_memory_mb"] is None
    assert (record["device"], record["epochs"], record["image_size"], record["batch_size"]) == (
        "cpu",
        2,
        16,
        32,
    )
    assert record["node"] == socket.gethostname()
    # Each epoch's report carries the figures an early-stopping scheduler needs.
    assert len(reports) == 2
    for key in ("accuracy", "step_time_norm", "params_norm", "params", "reward"):
        assert reports[-1][key] == pytest.approx(record[key])
    assert reports[-1]["peak_memory_mb"] is None  # a bound a scheduler may judge; CPU: unknown
    assert 0 < record["train_seconds"] < record["duration_s"]
    # ... and what was spent so far, which a stopped trial keeps: the last report's is the total.
    assert [report["epochs"] for report in reports] == [1, 2]
    assert 0 < reports[0]["train_seconds"] < reports[1]["train_seconds"]
    assert reports[1]["train_seconds"] == pytest.approx(record["train_seconds"])


def test_flops_cost_puts_normalized_flops_in_the_reward(tiny_spec):
    # The FLOP-counting baseline of bench/search_quality.py: S is FLOPs over the reference's.
    by_time = evaluate_candidate(tiny_spec, quick_config()).to_dict()
    by_flops = evaluate_candidate(tiny_spec, quick_config(reward_cost="flops")).to_dict()
    assert by_flops["reward_cost"] == "flops"
    assert by_flops["accuracy"] == by_time["accuracy"]  # the same training, another score
    assert by_flops["flops_norm"] == by_time["flops_norm"] != by_time["step_time_norm"]
    assert by_flops["reward"] == pytest.approx(
        reward(by_flops["accuracy"], by_flops["flops_norm"], by_flops["params_norm"])
    )
    assert by_time["reward"] == pytest.approx(
        reward(by_time["accuracy"], by_time["step_time_norm"], by_time["params_norm"])
    )


def test_small_net_learns_mnist5k_and_same_seed_gives_same_accuracy(tiny_spec):
    # The embedded dataset, on the CPU: 2 epochs of 4,500 real MNIST digits at 32 px.
    config = quick_config(dataset="mnist5k", image_size=32, batch_size=64, epochs=2)
    data = config.load_data()
    epochs = []
    first = evaluate_candidate(
        tiny_spec, config, data=data, on_epoch_end=lambda e, m: epochs.append(m["accuracy"])
    )
    again = evaluate_candidate(tiny_spec, config, data=data)
    assert first.ok and first.accuracy >= 0.8, first.accuracy  # chance is 0.1; about 0.96 seen
    assert again.accuracy == first.accuracy
    assert len(epochs) == 2 and epochs[-1] == first.accuracy


def test_nan_loss_is_a_failed_record_not_a_score(tiny_spec):
    # Plain SGD at an absurd learning rate diverges to NaN within a few steps.
    result = evaluate_candidate(tiny_spec, quick_config(optimizer="sgd", lr=1e6))
    assert result.status == "failed" and "loss became nan" in result.failure
    assert result.accuracy is None and result.reward is None
    assert result.step_time_ms is not None and result.params > 0  # what was measured is kept


def test_preloaded_data_must_have_the_configured_size(tiny_spec):
    data = quick_config(image_size=24).load_data()
    with pytest.raises(ConfigError, match="image_size is 16"):
        evaluate_candidate(tiny_spec, quick_config(), data=data)


def test_image_size_defaults_to_the_spec_train_resolution(tiny_spec):
    config = quick_config(image_size=None)
    assert config.image_size_for(tiny_spec) == 32
    assert config.load_data(tiny_spec).image_size == 32


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"image_size": 0}, "image_size"),
        ({"lr": 0.0}, "lr"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"precision": "fp16"}, "precision"),
        ({"heldout_fraction": 0.0}, "heldout_fraction"),
        ({"reward_w": 0.07}, "reward_w"),
        ({"reward_v": float("nan")}, "reward_v"),
        ({"timing_steps": 0}, "timing_steps"),
        ({"num_workers": -1}, "num_workers"),
        ({"timing_clock": "sundial"}, "timing_clock"),
        ({"reward_cost": "watts"}, "reward_cost"),
    ],
)
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(EffnasError, match=field):
        quick_config(**changes)


def test_image_size_below_total_stride_names_the_field(tiny_spec):
    with pytest.raises(ConfigError, match="image_size must be at least the net's total stride 8"):
        evaluate_candidate(tiny_spec, quick_config(image_size=4))


# -- the reward ----------------------------------------------------------------------------------


def test_reward_is_the_papers_product():
    assert reward(0.8, 1.0, 1.0) == pytest.approx(0.8)
    assert reward(0.8, 2.0, 1.0) == pytest.approx(0.8 * 2**-0.07)
    assert reward(0.8, 1.0, 0.5) == pytest.approx(0.8 * 0.5**-0.05)
    assert reward(0.5, 4.0, 9.0, w=-0.5, v=0.0) == pytest.approx(0.25)
    # Slower at equal accuracy scores lower; equal speed and size, more accurate scores higher.
    assert reward(0.9, 1.5, 1.0) < reward(0.9, 1.0, 1.0) < reward(0.95, 1.0, 1.0)
    with pytest.raises(ValueError):
        reward(1.2, 1.0, 1.0)
    with pytest.raises(ValueError):
        reward(0.5, 0.0, 1.0)
    with pytest.raises(EffnasError, match=r"reward_w must be at most 0, got 0\.1"):
        quick_config(reward_w=0.1)


# -- the command ---------------------------------------------------------------------------------


def _cli(tiny_spec, *extra: str) -> list[str]:
    return [
        "evaluate",
        tiny_spec.to_string(),
        "--device",
        "cpu",
        "--reference",
        TINY_REFERENCE,
        "--timing-steps",
        "2",
        "--timing-warmup",
        "1",
        *extra,
    ]


def test_cli_json_prints_one_record_and_progress_on_stderr(tiny_spec, capsys):
    args = ["--dataset", "synthetic:200", "--image-size", "16", "--epochs", "2"]
    code = main(_cli(tiny_spec, *args, "--batch-size", "32", "--json"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)
    assert sorted(record) == sorted(SCHEMA) and record["status"] == "ok" and record["epochs"] == 2
    assert "epoch 1/2" in captured.err and "epoch 2/2" in captured.err


def test_cli_text_report(tiny_spec, capsys):
    args = ["--dataset", "synthetic:200", "--image-size", "16", "--epochs", "1"]
    assert main(_cli(tiny_spec, *args, "--batch-size", "32")) == 0
    out = capsys.readouterr().out
    for words in ("accuracy", "step time", "images/s", "parameters", "FLOPs", "peak memory"):
        assert words in out
    assert "reward" in out and "device       cpu" in out


def test_cli_failed_candidate_exits_1_with_the_reason(tiny_spec, capsys):
    args = ["--dataset", "synthetic:200", "--image-size", "16", "--epochs", "1", "--json"]
    code = main(_cli(tiny_spec, *args, "--optimizer", "sgd", "--lr", "1e6", "--batch-size", "32"))
    record = json.loads(capsys.readouterr().out)
    assert code == 1 and record["status"] == "failed"
    assert record["reward"] is None and "loss became" in record["failure"]


def _broken_image_folder(root):
    for cls in ("a", "b"):
        for index in range(3):
            path = root / cls / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 12), (index * 40, 0, 0)).save(path)
    (root / "b" / "broken.jpg").write_bytes(b"\x00not an image at all")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--dataset", "imagenett"], "dataset 'imagenett' is unknown"),
        (["--dataset", "imagefolder:/nonexistent/effnas"], "'/nonexistent/effnas' does not exist"),
        (["--dataset", "cifar10"], "needs a path"),
        (["--image-size", "4"], "image_size must be at least the net's total stride 8, got 4"),
        (["--batch-size", "0"], "batch_size must be an integer of at least 1, got 0"),
        (["--batch-size", "5000"], "batch_size 5000 is larger than the search split"),
        (["--epochs", "0"], "epochs"),
        (["--device", "tpu"], "device"),
        (["--reference", "efficientnetv2-q"], "efficientnetv2-q"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tiny_spec, capsys, extra, words):
    base = ["--dataset", "synthetic:200", "--image-size", "16", "--epochs", "1"]
    code = main(_cli(tiny_spec, *base, *extra))
    err = capsys.readouterr().err
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("nas evaluate: error:")]
    assert words in line and "Traceback" not in err


def test_cli_unreadable_image_file_is_one_line_and_exit_2(tiny_spec, capsys, tmp_path):
    _broken_image_folder(tmp_path / "images")
    dataset = f"imagefolder:{tmp_path / 'images'}"
    args = ["--dataset", dataset, "--image-size", "16", "--epochs", "1", "--batch-size", "2"]
    code = main(_cli(tiny_spec, *args, "--heldout-fraction", "0.3"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "broken.jpg" in errors[0] and "cannot be read" in errors[0]
