"""The full trainer: per-stage settings in force, exact resume, refused checkpoints, --init, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.transforms import v2

import nas.train.initial as initial_module
import nas.train.setup as trainer_module
from nas.cli import main
from nas.data import load_dataset
from nas.errors import ConfigError
from nas.train.config import ProgressiveConfig
from nas.train.loop import ema_multi_avg_fn, evaluate_accuracy
from nas.train.metrics import TIMING_METRICS, EpochMetrics, FinalMetrics
from nas.train.progressive import train_progressive
from nas.train.schedule import ProgressiveSchedule, Range
from searchspace import build_model, load_weights
from searchspace.errors import EffnasError
from tests import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
DATASET = "synthetic:100"  # 90 training images: 4 steps of 20 per epoch, 10 held out


def two_stage_schedule(**changes) -> ProgressiveSchedule:
    """16 -> 32 px; RandAugment 2 -> 6; Mixup off -> 0.4; dropout 0.1 -> 0.3."""
    schedule = ProgressiveSchedule(
        image_size=Range(16, 32),
        randaug_magnitude=Range(2, 6),
        mixup_alpha=Range(0, 0.4),
        dropout=Range(0.1, 0.3),
        stages=2,
    )
    return schedule.replace(**changes)


def make_config(schedule=None, **changes) -> ProgressiveConfig:
    settings = dict(
        dataset=DATASET,
        epochs=4,
        schedule=schedule or two_stage_schedule(),
        batch_size=20,
        lr=0.004,
        warmup_epochs=1.0,
        ema_decay=0.99,
        device="cpu",
    )
    return ProgressiveConfig(**(settings | changes))


def learning_metrics(history):
    return [{k: v for k, v in row.items() if k not in TIMING_METRICS} for row in history]


def states_equal(first, second) -> bool:
    if isinstance(first, torch.Tensor):
        return isinstance(second, torch.Tensor) and torch.equal(first, second)
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(
            states_equal(first[k], second[k]) for k in first
        )
    if isinstance(first, (list, tuple)):
        return len(first) == len(second) and all(
            states_equal(a, b) for a, b in zip(first, second, strict=True)
        )
    return first == second


def read_checkpoint(run_dir):
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


# -- configuration --------------------------------------------------------------------------------


def test_epochs_split_evenly_with_the_remainder_spread():
    def lengths(epochs, stages):
        config = make_config(two_stage_schedule(stages=stages), epochs=epochs)
        return [len(r) for r in config.stage_epochs()]

    assert lengths(10, 4) == [2, 3, 2, 3]  # boundaries floor(10 * i / 4): 0, 2, 5, 7, 10
    assert lengths(4, 4) == [1, 1, 1, 1]
    assert lengths(7, 2) == [3, 4]
    assert lengths(5, 1) == [5]
    config = make_config(two_stage_schedule(stages=3), epochs=7)
    assert [config.stage_of(epoch) for epoch in range(7)] == [0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ConfigError, match=r"epochs must be at least the number of stages \(4\)"):
        make_config(two_stage_schedule(stages=4), epochs=3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ema_decay": 1.0}, "ema_decay must be in [0, 1)"),
        ({"batch_size": 0}, "batch_size must be an integer of at least 1"),
        ({"init": "timm:/x.pth"}, "init must be torchvision:PATH or effnas:PATH"),
        ({"init": "torchvision:"}, "init must be torchvision:PATH or effnas:PATH"),
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"lr_schedule": "step"}, "lr_schedule must be one of"),
        ({"dataset": "cifar11:/x"}, "dataset 'cifar11:/x' is unknown"),
        ({"label_smoothing": 1.5}, "label_smoothing must be in"),
    ],
)
def test_bad_settings_name_the_field(changes, message):
    with pytest.raises(Exception, match=re.escape(message)) as error:
        make_config(**changes)
    assert isinstance(error.value, EffnasError)


def test_ema_follows_the_reference_code_warm_up():
    # TF's ExponentialMovingAverage(decay, num_updates=n): decay_n = min(decay, (1+n)/(10+n)).
    ema, weights = [torch.zeros(3)], [torch.zeros(3)]
    expected = torch.zeros(3)
    update = ema_multi_avg_fn(0.9)
    for n in range(1, 40):
        weights[0] = torch.full((3,), float(n))
        decay = min(0.9, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * weights[0]
        update(ema, weights, torch.tensor(n))
    assert torch.allclose(ema[0], expected, rtol=1e-6)


# -- the stages -----------------------------------------------------------------------------------


class Recorder:
    """Instruments the model, RandAugment and MixUp the trainer builds, per epoch."""

    def __init__(self, monkeypatch):
        self.epoch = 1
        self.forwards: list[tuple[int, bool, tuple, float]] = []
        self.randaug: list[tuple[int, int, tuple]] = []
        self.mixup: list[tuple[int, float, tuple]] = []
        self.crops: list[tuple[int, tuple, tuple]] = []  # (epoch, image in, crop out)
        self.model = None
        recorder = self

        class RecordingRandomResizedCrop(v2.RandomResizedCrop):
            def forward(self, *inputs):
                crop = super().forward(*inputs)
                recorder.crops.append((recorder.epoch, tuple(inputs[0].shape), tuple(crop.shape)))
                return crop

        class RecordingRandAugment(v2.RandAugment):
            def forward(self, *inputs):
                recorder.randaug.append((recorder.epoch, self.magnitude, tuple(inputs[0].shape)))
                return super().forward(*inputs)

        class RecordingMixUp(v2.MixUp):
            def forward(self, *inputs):
                images, labels = super().forward(*inputs)
                recorder.mixup.append((recorder.epoch, self.alpha, tuple(labels.shape)))
                return images, labels

        real_build = trainer_module.build_model

        def build(spec):
            model = real_build(spec)
            recorder.model = model

            def pre_hook(module, inputs):
                if module is recorder.model:  # not the EMA copy (deepcopy keeps the hook)
                    shape = tuple(inputs[0].shape[-2:])
                    record = (recorder.epoch, module.training, shape, module.dropout.p)
                    recorder.forwards.append(record)

            model.register_forward_pre_hook(pre_hook)
            return model

        monkeypatch.setattr(v2, "RandAugment", RecordingRandAugment)
        monkeypatch.setattr(v2, "MixUp", RecordingMixUp)
        monkeypatch.setattr(v2, "RandomResizedCrop", RecordingRandomResizedCrop)
        monkeypatch.setattr(trainer_module, "build_model", build)

    def epoch_end(self, epoch, metrics):
        self.epoch = epoch + 1


def test_each_stage_trains_with_its_own_settings(monkeypatch, tmp_path, capsys):
    recorder = Recorder(monkeypatch)
    carried = {}

    def on_epoch_end(epoch, metrics):
        if epoch == 2:  # the end of stage 1: stage 2 must start from these weights
            carried["weight"] = recorder.model.classifier.weight.detach().clone()
        recorder.epoch_end(epoch, metrics)

    first_of_stage2 = {}

    def check_carry(module, inputs):
        if recorder.epoch == 3 and module.training and "weight" not in first_of_stage2:
            first_of_stage2["weight"] = module.classifier.weight.detach().clone()

    config = make_config()
    real_build = trainer_module.build_model

    def build_and_watch(spec):
        model = real_build(spec)
        model.register_forward_pre_hook(check_carry)
        return model

    monkeypatch.setattr(trainer_module, "build_model", build_and_watch)
    outcome = train_progressive(
        tiny32(), config, tmp_path / "run", on_epoch_end=on_epoch_end, progress=True
    )

    training = [f for f in recorder.forwards if f[1]]
    evaluating = [f for f in recorder.forwards if not f[1]]
    for epoch, size, dropout in [(1, 16, 0.1), (2, 16, 0.1), (3, 32, 0.3), (4, 32, 0.3)]:
        steps = [f for f in training if f[0] == epoch]
        assert len(steps) == 4  # 90 images, batches of 20, the last incomplete one dropped
        assert {f[2] for f in steps} == {(size, size)}
        assert [f[3] for f in steps] == pytest.approx([dropout] * 4)
    # Every evaluation runs at the spec's eval size, whatever the stage.
    assert {f[2] for f in evaluating} == {(32, 32)}
    # RandAugment at magnitude 2 on 16 px images, then 6 on 32 px; 80 images read per epoch.
    for epoch, magnitude, size in [(1, 2, 16), (2, 2, 16), (3, 6, 32), (4, 6, 32)]:
        calls = [r for r in recorder.randaug if r[0] == epoch]
        assert len(calls) == 80
        assert {(r[1], r[2]) for r in calls} == {(magnitude, (3, size, size))}
    # Every training image is a random-resized crop of the 32 px original at the stage's size.
    for epoch, size in [(1, 16), (2, 16), (3, 32), (4, 32)]:
        crops = [c for c in recorder.crops if c[0] == epoch]
        assert len(crops) == 80
        assert {c[1:] for c in crops} == {((3, 32, 32), (3, size, size))}
    # MixUp off in stage 1 (alpha 0), on in stage 2 at 0.4 with class-probability labels.
    assert {r[0] for r in recorder.mixup} == {3, 4}
    assert {(r[1], r[2]) for r in recorder.mixup} == {(0.4, (20, 10))}
    # Weights carried over: stage 2's first step starts from stage 1's last weights.
    assert torch.equal(first_of_stage2["weight"], carried["weight"])

    rows = outcome.history
    assert [r["stage"] for r in rows] == [1, 1, 2, 2]
    assert [r["image_size"] for r in rows] == [16, 16, 32, 32]
    assert [r["randaug_magnitude"] for r in rows] == [2, 2, 6, 6]
    assert [r["mixup_alpha"] for r in rows] == pytest.approx([0, 0, 0.4, 0.4])
    assert [r["dropout"] for r in rows] == pytest.approx([0.1, 0.1, 0.3, 0.3])
    # The progress bar names the stage and what is in force.
    err = capsys.readouterr().err
    assert "epoch 1/4 stage 1/2: 16 px, RandAugment 2, Mixup off, dropout 0.1" in err
    assert "epoch 3/4 stage 2/2: 32 px, RandAugment 6, Mixup 0.4, dropout 0.3" in err


def test_the_crop_switch_off_trains_on_whole_images(monkeypatch, tmp_path):
    recorder = Recorder(monkeypatch)
    config = make_config(epochs=2, train_crop="none")
    outcome = train_progressive(tiny32(), config, tmp_path / "run", on_epoch_end=recorder.epoch_end)
    assert recorder.crops == []
    assert {f[2] for f in recorder.forwards if f[1] and f[0] == 1} == {(16, 16)}
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["config"]["train_crop"] == "none"
    # Whole images are still augmented per stage: RandAugment on every one of them.
    assert len(recorder.randaug) == 160 and len(outcome.history) == 2


def ema_model_of(run_dir, spec):
    """The EMA weights of the run's checkpoint, as a model of their own."""
    state = read_checkpoint(run_dir)["ema"]
    model = build_model(spec)
    model.load_state_dict({k[len("module.") :]: v for k, v in state.items() if k != "n_averaged"})
    return model


def test_accuracy_at_the_eval_size_and_at_the_stage_size(tmp_path):
    """Each epoch's EMA weights, scored on their own at 32 px (the eval size) and at the stage's
    16 or 32 px, give the two columns; the progress line and metrics.csv carry both."""
    run, lines, scored = tmp_path / "run", [], []

    def on_epoch_end(epoch, metrics):
        model = ema_model_of(run, tiny32())
        at = {}
        for size in (16, 32):
            loader = load_dataset(DATASET, size, seed=0).heldout_loader(20)
            at[size] = evaluate_accuracy(model, loader, device=CPU)
        scored.append(at)

    config = make_config(schedule=two_stage_schedule(randaug_magnitude=Range(0, 0)), epochs=4)
    outcome = train_progressive(tiny32(), config, run, log=lines.append, on_epoch_end=on_epoch_end)
    for row, at in zip(outcome.history, scored, strict=True):
        assert row["accuracy"] == at[32]
        assert row["accuracy_at_train_size"] == at[row["image_size"]]
    assert [row["image_size"] for row in outcome.history] == [16, 16, 32, 32]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"accuracy", "accuracy_raw", "accuracy_at_train_size"} <= set(header)
    first = outcome.history[0]
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert (
        f"held-out accuracy {first['accuracy']:.2%} (EMA; raw {first['accuracy_raw']:.2%}) at "
        f"the eval size 32 px, {first['accuracy_at_train_size']:.2%} at the train size 16 px"
    ) in epoch_lines[0]
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["accuracy_at_train_size"] == outcome.history[-1]["accuracy_at_train_size"]
    assert (final["train_image_size"], final["eval_image_size"]) == (32, 32)
    assert final["train_cpu_seconds"] == outcome.train_cpu_seconds > 0


def tiny32():
    from searchspace import ArchSpec, StageSpec

    return ArchSpec(
        name="tiny",
        stem_channels=8,
        stages=(
            StageSpec("fused", repeats=1, kernel=3, stride=1, expand_ratio=1, out_channels=8),
            StageSpec("fused", repeats=1, kernel=3, stride=2, expand_ratio=4, out_channels=16),
            StageSpec("mbconv", 1, 3, 2, 4, 24, se_ratio=0.25),
        ),
        head_channels=32,
        num_classes=10,
        train_resolution=32,
        eval_resolution=32,
    )


def test_run_directory_holds_metrics_spec_and_the_evaluated_weights(tmp_path):
    run = tmp_path / "run"
    outcome = train_progressive(tiny32(), make_config(epochs=2), run)
    record = json.loads((run / "metrics.json").read_text())
    assert record["history"] == outcome.history
    assert record["final"]["accuracy"] == outcome.accuracy
    assert record["config"]["schedule"]["image_size"] == [16, 32]
    assert [s["epochs"] for s in record["stages"]] == [[1, 1], [2, 2]]
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["epoch", "stage", "image_size"]
    assert len(lines) == 3
    # weights.pt holds the EMA weights: evaluated on their own, they give the reported accuracy.
    model = load_weights(run / "weights.pt")
    data = load_dataset(DATASET, 32, seed=0)
    accuracy = evaluate_accuracy(model, data.heldout_loader(20), device=CPU)
    assert accuracy == outcome.accuracy
    assert (run / "spec.yaml").is_file()


def test_progressive_training_learns(tmp_path):
    schedule = ProgressiveSchedule(
        image_size=Range(16, 32),
        randaug_magnitude=Range(0, 2),
        mixup_alpha=Range(0, 0),
        dropout=Range(0.0, 0.1),
        stages=2,
    )
    config = make_config(schedule, dataset="synthetic:400", epochs=4, batch_size=32, lr=0.008)
    outcome = train_progressive(tiny32(), config, tmp_path / "run")
    assert outcome.accuracy >= 0.7  # chance is 0.1
    assert outcome.history[-1]["train_loss"] < outcome.history[0]["train_loss"]


# -- resume ---------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    """Killed after epoch 2 (a stage boundary) and again after epoch 3 (mid-stage)."""
    config = make_config(epochs=5)  # stages: epochs 1-2, then 3-5
    whole = train_progressive(tiny32(), config, tmp_path / "whole")

    def stop_after(epoch_to_stop):
        def on_epoch_end(epoch, metrics):
            if epoch == epoch_to_stop:
                raise Interrupt

        return on_epoch_end

    run = tmp_path / "broken"
    with pytest.raises(Interrupt):
        train_progressive(tiny32(), config, run, on_epoch_end=stop_after(2))
    assert read_checkpoint(run)["epoch"] == 2
    with pytest.raises(Interrupt):
        train_progressive(tiny32(), config, run, resume=True, on_epoch_end=stop_after(3))
    resumed = train_progressive(tiny32(), config, run, resume=True)
    assert resumed.resumed_from == 3

    # Exactly equal on the CPU: every source of randomness is restored or reseeded per epoch.
    assert learning_metrics(resumed.history) == learning_metrics(whole.history)
    first, second = read_checkpoint(tmp_path / "whole"), read_checkpoint(run)
    for key in ("model", "ema", "optimizer", "scheduler", "rng"):
        assert states_equal(first[key], second[key]), key
    assert states_equal(
        torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)["state_dict"],
        torch.load(run / "weights.pt", weights_only=True)["state_dict"],
    )
    assert json.loads((run / "metrics.json").read_text())["final"]["accuracy"] == whole.accuracy


def _cli_run(tmp_path):
    """``nas train`` arguments of a 4-epoch, 2-stage run on a tiny net."""
    config_args = [
        "--dataset", "synthetic:200", "--epochs", "4", "--stages", "2", "--batch-size", "20",
        "--lr", "0.004", "--ema-decay", "0.99", "--device", "cpu", "--progress", "off",
    ]  # fmt: skip
    spec_path = tmp_path / "tiny.yaml"
    tiny32().save(spec_path)
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(yaml.safe_dump(two_stage_schedule().to_dict()))
    return ["train", str(spec_path), "--progressive", str(schedule), *config_args]


def _held_after(epoch: int, args: list[str], run, marker) -> subprocess.Popen:
    """The run, in a subprocess, held after ``epoch`` (see tests.nas.train.hold_after_epoch)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count as this process
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.nas.train.hold_after_epoch", str(epoch), str(marker),
         *args, "--out", str(run)],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the run never reached the epoch"
        time.sleep(0.05)
    return process


def _output_within(process: subprocess.Popen, seconds: float) -> str:
    """The held run's output once it exits; if it is still running after ``seconds`` (a hang, not
    a slow machine), fails with every thread's stack (SIGUSR1, see hold_after_epoch)."""
    try:
        return process.communicate(timeout=seconds)[0]
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        process.kill()
        output = process.communicate()[0]
        raise AssertionError(f"the run did not exit in {seconds} s:\n{output[-6000:]}") from None


@pytest.fixture(scope="module")
def uninterrupted_cli_run(tmp_path_factory) -> Path:
    """:func:`_cli_run`'s run, never stopped, at one thread as the tests run: what each stopped
    and resumed run must equal, whatever the signal (trained once for the three)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*_cli_run(root), "--out", str(root / "whole")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "whole"


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_resumes_to_the_same_result(tmp_path, stop, uninterrupted_cli_run):
    args = _cli_run(tmp_path)
    run = tmp_path / "stopped"
    process = _held_after(2, args, run, tmp_path / "held")
    try:
        process.send_signal(stop)
        output = _output_within(process, 120)  # it exits within seconds
    finally:
        process.kill()
        process.wait()
    if stop == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        # Ctrl-C or SIGTERM: one line saying how to go on, exit 130, no traceback.
        assert process.returncode == 130, output[-3000:]
        assert "interrupted; every finished epoch is saved" in output and "--resume" in output
        assert "Traceback" not in output
    assert read_checkpoint(run)["epoch"] == 2
    assert not list(run.glob("*.partial"))

    assert main([*args, "--out", str(run), "--resume"]) == 0
    whole = uninterrupted_cli_run
    resumed = json.loads((run / "metrics.json").read_text())
    uninterrupted = json.loads((whole / "metrics.json").read_text())
    assert learning_metrics(resumed["history"]) == learning_metrics(uninterrupted["history"])
    assert states_equal(read_checkpoint(run)["model"], read_checkpoint(whole)["model"])


# -- refused checkpoints and bad input, through the CLI -------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    tiny32().save(root / "tiny.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = [
            "train", str(root / "tiny.yaml"), "--dataset", DATASET, "--epochs", "2", "--stages",
            "2", "--batch-size", "20", "--device", "cpu", "--out", str(root / "run"),
        ]  # fmt: skip
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return root, args


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nas train: error: "), err
    return err


def copy_run(finished_run, tmp_path):
    root, args = finished_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    return [*args[:-1], str(run)], run


def test_the_records_are_typed_and_a_wrong_key_fails_at_construction(finished_run):
    root, _ = finished_run
    record = json.loads((root / "run" / "metrics.json").read_text())
    columns = [field.name for field in dataclasses.fields(EpochMetrics)]
    assert (root / "run" / "metrics.csv").read_text().splitlines()[0].split(",") == columns
    rows = [EpochMetrics(**row) for row in record["history"]]
    assert rows[-1].to_dict() == record["history"][-1]
    assert FinalMetrics(**record["final"]).to_dict() == record["final"]
    with pytest.raises(TypeError, match="accuracy_ema"):
        EpochMetrics(**(record["history"][0] | {"accuracy_ema": 0.5}))
    with pytest.raises(TypeError, match="test_acc"):
        FinalMetrics(**{**record["final"], "test_acc": None})
    with pytest.raises(dataclasses.FrozenInstanceError):
        rows[0].accuracy = 1.0


def test_corrupt_checkpoints_are_refused(finished_run, tmp_path, capsys):
    args, run = copy_run(finished_run, tmp_path)
    checkpoint = run / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])  # cut short, as a full disk would leave it
    err = one_line_error(capsys, [*args, "--resume"])
    assert "cannot be read" in err and "checkpoint.pt" in err
    checkpoint.write_bytes(b"not a checkpoint at all")
    assert "cannot be read" in one_line_error(capsys, [*args, "--resume"])
    torch.save({"state_dict": {}}, checkpoint)  # a torch file, but not ours
    assert "not an effnas training checkpoint" in one_line_error(capsys, [*args, "--resume"])
    # Nothing was trained over it: the checkpoint is still the bad one.
    assert "state_dict" in torch.load(checkpoint, weights_only=True)


def test_checkpoints_of_another_spec_or_config_are_refused(finished_run, tmp_path, capsys):
    args, run = copy_run(finished_run, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()
    err = one_line_error(capsys, [*args, "--resume", "--lr", "0.01"])
    assert "another training config: lr" in err and "0.01 here" in err
    err = one_line_error(capsys, [*args, "--resume", "--epochs", "3"])
    assert "epochs 2 there, 3 here" in err
    err = one_line_error(capsys, [*args, "--resume", "--stages", "1"])
    assert "schedule.stages 2 there, 1 here" in err
    other = tmp_path / "other.yaml"
    tiny32().replace(head_channels=48).save(other)
    err = one_line_error(capsys, [args[0], str(other), *args[2:], "--resume"])
    assert "belongs to another architecture" in err
    # A fresh run into a directory with a checkpoint is refused, not started over it.
    err = one_line_error(capsys, args)
    assert "already holds a checkpoint; pass --resume" in err
    assert (run / "checkpoint.pt").read_bytes() == before
    # The training crop is part of the run: resuming with the other one is refused.
    assert json.loads((run / "metrics.json").read_text())["config"]["train_crop"] == (
        "random-resized"
    )
    err = one_line_error(capsys, [*args, "--resume", "--train-crop", "none"])
    assert "train_crop 'random-resized' there, 'none' here" in err
    # The device may change on resume; the finished run just reports again.
    assert main([*args, "--resume", "--device", "auto"]) == 0


def test_a_checkpoint_older_than_the_crop_setting_resumes_as_trained(
    finished_run, tmp_path, capsys
):
    # Checkpoints written before train_crop existed trained on whole images.
    args, run = copy_run(finished_run, tmp_path)
    checkpoint = read_checkpoint(run)
    del checkpoint["config"]["train_crop"]
    torch.save(checkpoint, run / "checkpoint.pt")
    err = one_line_error(capsys, [*args, "--resume"])
    assert "train_crop 'none' there, 'random-resized' here" in err
    assert main([*args, "--resume", "--train-crop", "none"]) == 0


def test_resume_without_a_checkpoint_is_refused(finished_run, tmp_path, capsys):
    args, _ = copy_run(finished_run, tmp_path)
    err = one_line_error(capsys, [*args[:-1], str(tmp_path / "empty"), "--resume"])
    assert "there is no checkpoint" in err


@pytest.mark.parametrize(
    ("schedule", "extra", "message"),
    [
        ({"image_size": [16, 32], "randaug_magnitude": 2, "mixup_alpha": 0, "dropout": 0.1,
          "mixup": 0.2}, [], "unknown key mixup"),
        ({"image_size": [32, 16], "randaug_magnitude": 2, "mixup_alpha": 0, "dropout": 0.1},
         [], "image_size.min must not exceed image_size.max"),
        ({"image_size": [4, 32], "randaug_magnitude": 2, "mixup_alpha": 0, "dropout": 0.1},
         [], "image size 4 of stage 1 is below the net's total stride 8"),
        (None, ["--progressive", "off", "--image-size", "4"], "below the net's total stride 8"),
        (None, ["--progressive", "fancy"], "neither a preset"),
        (None, ["--dataset", "cifar10:/no/such/dir"], "--dataset: '/no/such/dir' does not exist"),
        (None, ["--dataset", "mnist"], "dataset 'mnist' is unknown; did you mean 'mnist5k'?"),
        (None, ["--stages", "5"], "epochs must be at least the number of stages (5), got 4"),
        (None, ["--init", "torchvision:/no/s.pth"], "argument --init: '/no/s.pth' does not exist"),
        (None, ["--init", "s.pth"], "init must be torchvision:PATH or effnas:PATH"),
        (None, ["--batch-size", "500"], "batch_size 500 is larger than the search split"),
        (None, ["--train-crop", "centre"],
         "train_crop must be one of none, random-resized, got 'centre'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, schedule, extra, message):
    spec = tmp_path / "tiny.yaml"
    tiny32().save(spec)
    argv = ["train", str(spec), "--dataset", DATASET, "--epochs", "4", "--out", str(tmp_path)]
    if schedule is not None:
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(schedule))
        argv += ["--progressive", str(tmp_path / "s.yaml")]
    assert message in one_line_error(capsys, argv + extra)
    assert not (tmp_path / "checkpoint.pt").exists()


# -- fine-tuning from imported weights ------------------------------------------------------------


def test_init_from_torchvision_weights_fine_tunes_with_a_new_classifier(tmp_path, capsys):
    from torchvision.models import efficientnet_v2_s

    from searchspace import load_arch

    torch.manual_seed(0)
    reference = efficientnet_v2_s(weights=None)  # 1000 classes, nothing downloaded
    weights = tmp_path / "s.pth"
    torch.save(reference.state_dict(), weights)
    spec = load_arch("efficientnetv2-s").replace(train_resolution=32, eval_resolution=32)
    spec.save(tmp_path / "s32.yaml")
    argv = [
        "train", str(tmp_path / "s32.yaml"), "--dataset", "synthetic:20", "--epochs", "1",
        "--progressive", "off", "--batch-size", "4", "--max-train-images", "8", "--lr", "1e-5",
        "--ema-decay", "0", "--init", f"torchvision:{weights}", "--out", str(tmp_path / "run"),
        "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "initialized from torchvision:" in capsys.readouterr().err
    tuned = load_weights(tmp_path / "run" / "weights.pt")
    assert tuned.classifier.out_features == 10 and tuned.spec.num_classes == 10
    # Two steps at lr 1e-5 leave the imported weights almost where they were; a net that had
    # not loaded them would be unrelated (cosine similarity near 0).
    ours = tuned.stages[3][0].conv_dw[0].weight.flatten()
    theirs = reference.features[4][0].block[1][0].weight.flatten()
    assert torch.nn.functional.cosine_similarity(ours, theirs, dim=0) > 0.99


def test_init_from_an_effnas_file_and_refusal_of_another_architecture(tmp_path):
    from searchspace import EffnasError
    from searchspace.weights import save_weights

    model = build_model(tiny32())
    path = save_weights(model, tmp_path / "w.pt")
    fresh = build_model(tiny32())
    summary = initial_module.load_initial_weights(fresh, f"effnas:{path}")
    assert "classifier left fresh" not in summary
    assert states_equal(fresh.state_dict(), model.state_dict())
    five = build_model(tiny32().replace(num_classes=5))
    assert "classifier left fresh" in initial_module.load_initial_weights(five, f"effnas:{path}")
    assert torch.equal(five.stem[0].weight, model.stem[0].weight)
    other = build_model(tiny32().replace(head_channels=48))
    with pytest.raises(EffnasError, match="not the architecture being trained"):
        initial_module.load_initial_weights(other, f"effnas:{path}")


# -- another net under the same loop (build=) -----------------------------------------------------


class Foreign(torch.nn.Module):
    """A net that is not an effnas one, shaped like torchvision's (dropout, then the classifier)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Dropout(0.5), torch.nn.Linear(8, num_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def test_another_net_trains_under_the_same_loop_schedule_and_resume(tmp_path):
    built = []

    def build(spec):
        built.append(Foreign(spec.num_classes))
        return built[-1]

    config = make_config(epochs=3)  # stages: epoch 1 (dropout 0.1), then 2-3 (dropout 0.3)
    dropouts = []

    def on_epoch_end(epoch, metrics):
        dropouts.append(built[-1].classifier[0].p)
        if epoch == 1 and len(built) == 1:
            raise Interrupt

    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train_progressive(tiny32(), config, run, build=build, on_epoch_end=on_epoch_end)
    outcome = train_progressive(
        tiny32(), config, run, resume=True, build=build, on_epoch_end=on_epoch_end
    )
    assert outcome.resumed_from == 1 and len(outcome.history) == 3
    assert dropouts == [0.1, 0.3, 0.3]  # the schedule's dropout, set on the net's nn.Dropout
    record = json.loads((run / "metrics.json").read_text())
    assert record["model"].endswith(".Foreign")
    assert not (run / "weights.pt").exists()
    # state_dict.pt holds the evaluated (EMA) weights: on their own they give the accuracy.
    model = Foreign(10)
    model.load_state_dict(torch.load(run / "state_dict.pt", weights_only=True))
    data = load_dataset(DATASET, 32, seed=0)
    assert evaluate_accuracy(model, data.heldout_loader(20), device=CPU) == outcome.accuracy
