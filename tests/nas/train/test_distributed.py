"""``nas train --workers N``: Ray Train workers agree with one process, survive a worker death,
resume across runs and numbers of workers, and keep a local Ray local.

Two data-parallel workers on CPUs normalize each worker's half batch (``SyncBatchNorm`` needs a
GPU), so they are compared with one process that computes every step the way they do
(:func:`split_step`: each half through the net on its own, the mean of the halves' gradients,
rank 0's BatchNorm statistics). One worker is compared with plain one-process training. Every
random draw of an epoch comes from the epoch's seed per worker, so the comparisons use a
schedule without RandAugment, Mixup, dropout, random-resized crops or stochastic depth: those
draw per worker what one process draws for the whole batch, and could not agree.

One local Ray (127.0.0.1, 2 CPUs) for the module's in-process runs; the CLI run starts its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

import nas.train.loop as loop_module
from nas.cluster import start_local_ray
from nas.errors import WorkerFailureError
from nas.train.config import DistributedConfig, ProgressiveConfig
from nas.train.device import autocast
from nas.train.distributed import train_distributed
from nas.train.metrics import TIMING_METRICS
from nas.train.progressive import train_progressive
from nas.train.schedule import ProgressiveSchedule, Range
from searchspace import load_weights
from tests import REPO
from tests.nas.train.test_progressive import read_checkpoint, tiny32
from tests.nas.train.worker_faults import Fault, Faults, generations

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# float32, one thread per process, 36 RMSProp steps. The halves' gradients are averaged by
# gloo's all-reduce there and by backward's accumulation here, both exact for two halves
# (halving is exact in binary): measured 0 in this module's Ray, up to 1.8e-6 in the two-node
# job of test_distributed_cluster.py.
ATOL, RTOL = 1e-5, 1e-4
SPEC = tiny32().replace(drop_path_rate=0.0)  # stochastic depth would draw per worker
# Ray Train's controller collects reports every 2 s and a worker's next report waits for that:
# with epochs of a fraction of a second, polling faster saves seconds per run (Ray Train passes
# this variable on from the driver).
FAST_POLL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


def exact_config(**changes) -> ProgressiveConfig:
    """4 epochs in 2 stages (16 -> 32 px) of 9 steps of 20 images, nothing random but the order
    (whole images: no random-resized crops)."""
    schedule = ProgressiveSchedule(
        image_size=Range(16, 32),
        randaug_magnitude=Range(0, 0),
        mixup_alpha=Range(0, 0),
        dropout=Range(0.0, 0.0),
        stages=2,
    )
    settings = dict(
        dataset="synthetic:200",
        epochs=4,
        schedule=schedule,
        batch_size=20,
        lr=0.004,
        warmup_epochs=1.0,
        ema_decay=0.99,
        device="cpu",
        train_crop="none",
    )
    return ProgressiveConfig(**(settings | changes))


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this test process")
    temp_dir = tempfile.mkdtemp(prefix="efdt-", dir="/tmp")  # short: Ray's sockets live below
    # The workers import nas and the tests' hooks by name; a local Ray's workers inherit this
    # process's environment, not its sys.path.
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    start_local_ray(
        num_cpus=2,
        temp_dir=temp_dir,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(*FAST_POLL)
            yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def split_step(parts: int):
    """``train_step`` as ``parts`` DDP workers on CPUs compute it, in one process.

    Worker ``r``'s share of a global batch is images ``r::parts`` of it (the DistributedSampler
    deals the permutation out in turn). Each share goes through the net on its own (BatchNorm
    statistics per share), the gradient is the mean of the shares' gradients (DDP's
    all-reduce), and the BatchNorm running statistics are rank 0's (DDP broadcasts rank 0's
    buffers before every forward).
    """

    def step(model, images, labels, optimizer, loss_fn, *, device, precision):
        optimizer.zero_grad(set_to_none=True)
        losses, rank0_buffers = [], []
        for part in range(parts):
            with autocast(device, precision):
                loss = loss_fn(model(images[part::parts]), labels[part::parts])
            (loss / parts).backward()
            losses.append(loss.detach())
            if part == 0:
                rank0_buffers = [buffer.clone() for buffer in model.buffers()]
        with torch.no_grad():
            for buffer, kept in zip(model.buffers(), rank0_buffers, strict=True):
                buffer.copy_(kept)
        optimizer.step()
        return torch.stack(losses).mean()

    return step


class Stop(Exception):
    pass


def reference(tmp_path: Path, name: str, split_epochs: int, monkeypatch) -> Path:
    """One-process run: the first ``split_epochs`` epochs as 2 workers compute them
    (:func:`split_step`), the rest plainly (as 1 worker does); its run directory."""
    run = tmp_path / name
    real_step = loop_module.train_step
    if split_epochs:
        monkeypatch.setattr(loop_module, "train_step", split_step(2))

        def stop(epoch, metrics):
            if epoch == split_epochs:
                raise Stop

        config = exact_config()
        if split_epochs < config.epochs:
            with pytest.raises(Stop):
                train_progressive(SPEC, config, run, on_epoch_end=stop)
        else:
            train_progressive(SPEC, config, run)
        monkeypatch.setattr(loop_module, "train_step", real_step)
    if split_epochs < exact_config().epochs:
        train_progressive(SPEC, exact_config(), run, resume=split_epochs > 0)
    return run


def max_difference(first: dict, second: dict) -> float:
    return max(
        (first[key].double() - second[key].double()).abs().max().item()
        for key in first
        if first[key].is_floating_point()
    )


def assert_same_run(run: Path, expected: Path) -> dict[str, float]:
    """The two run directories hold the same training, within ATOL/RTOL; the differences."""
    ours, theirs = read_checkpoint(run), read_checkpoint(expected)
    assert ours["epoch"] == theirs["epoch"] == 4
    for entry in ("model", "ema"):
        assert ours[entry].keys() == theirs[entry].keys()
        for key in theirs[entry]:
            torch.testing.assert_close(
                ours[entry][key], theirs[entry][key], atol=ATOL, rtol=RTOL, msg=f"{entry}.{key}"
            )
    history = json.loads((run / "metrics.json").read_text())["history"]
    expected_history = json.loads((expected / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    for row, other in zip(history, expected_history, strict=True):
        for key in set(other) - set(TIMING_METRICS):
            assert row[key] == pytest.approx(other[key], abs=ATOL, rel=RTOL), key
    return {entry: max_difference(ours[entry], theirs[entry]) for entry in ("model", "ema")}


def test_a_dead_worker_and_a_stopped_run_resume_to_what_one_process_computes(
    local_ray, tmp_path, monkeypatch
):
    """Two workers: rank 1 dies at the start of epoch 2, once epoch 1's checkpoint is
    registered, and the restarted workers resume from it; rank 0 raises at the start of epoch 3
    with no failure left to recover from, and the run stops with one line and epoch 2's
    checkpoint in the run directory. ``nas train --workers 1 --resume``, in a fresh process
    whose Ray address file names a dead head, starts its own local Ray and finishes the run.

    The run ends where one process ends that computes epochs 1-2 as two workers do
    (:func:`split_step`) and epochs 3-4 plainly: one worker is one process. (Two workers over
    all four epochs, on two nodes: test_distributed_cluster.py.)
    """
    markers = tmp_path / "markers"
    markers.mkdir()
    run = tmp_path / "run"
    faults = (Fault(rank=1, epoch=1), Fault(rank=0, epoch=2, how="raise"))
    with pytest.raises(WorkerFailureError, match="worker 0: RuntimeError: injected failure"):
        train_distributed(
            SPEC,
            exact_config(),
            run,
            DistributedConfig(workers=2, max_failures=1),
            on_epoch_start=Faults(str(run), str(markers), faults),
        )
    first, restarted = generations(markers)
    assert first[1] == [0, 1]  # rank 1 died as epoch 2 began ...
    assert restarted[0] == [1, 2] and restarted[1][0] == 1  # ... and both resumed there
    assert read_checkpoint(run)["epoch"] == 2
    assert sorted(path.name for path in run.iterdir()) == [
        "checkpoint.pt",
        "metrics.csv",
        "metrics.json",
        "spec.yaml",
    ]  # fmt: skip  (no weights.pt yet; Ray Train's storage is removed)

    finished = _resume_in_a_fresh_process(run, tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Traceback" not in finished.stderr
    assert "trained tiny on synthetic:200: 4 epochs in 2 stages" in finished.stdout
    assert sorted(path.name for path in run.iterdir()) == [
        "checkpoint.pt", "metrics.csv", "metrics.json", "spec.yaml", "weights.pt",
    ]  # fmt: skip
    record = json.loads((run / "metrics.json").read_text())
    assert record["workers"] == 1

    expected = reference(tmp_path, "reference", 2, monkeypatch)
    differences = assert_same_run(run, expected)
    print(f"\n2 workers, then --resume on 1 worker vs one process: max |difference| {differences}")
    # weights.pt is the EMA model, as one process writes it.
    weights = load_weights(run / "weights.pt").state_dict()
    ema = read_checkpoint(expected)["ema"]
    assert max_difference(weights, {key: ema[f"module.{key}"] for key in weights}) <= ATOL

    # Plain one-process training normalizes whole batches of 20 in epochs 1-2 too: its weights
    # differ, so the comparison above can tell the two apart.
    plain = reference(tmp_path, "plain", 0, monkeypatch)
    versus_plain = max_difference(read_checkpoint(run)["model"], read_checkpoint(plain)["model"])
    accuracy = {
        name: json.loads((path / "metrics.json").read_text())["final"]["accuracy"]
        for name, path in (("this run", run), ("plain", plain))
    }
    print(f"vs plain one-process training: max |weight difference| {versus_plain:.3g}, {accuracy}")
    assert versus_plain > 100 * ATOL


def exact_train_argv(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    """``nas train`` with :func:`exact_config`'s settings on :data:`SPEC` into ``run`` (spec and
    schedule saved into ``tmp_path``), then ``extra`` flags."""
    spec_file, schedule_file = tmp_path / "spec.yaml", tmp_path / "schedule.yaml"
    SPEC.save(spec_file)
    config = exact_config()
    schedule_file.write_text(yaml.safe_dump(config.schedule.to_dict()))
    return [
        sys.executable, "-m", "nas.cli", "train", str(spec_file), "--dataset", config.dataset,
        "--epochs", "4", "--progressive", str(schedule_file), "--batch-size", "20", "--lr",
        "0.004", "--warmup-epochs", "1", "--ema-decay", "0.99", "--train-crop", "none",
        "--device", "cpu", "--progress", "off", "--out", str(run), *extra,
    ]  # fmt: skip


def _resume_in_a_fresh_process(run: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``nas train ... --workers 1 --out RUN --resume`` in a new process, with ``RAY_ADDRESS``
    unset and a private ``RAY_TMPDIR`` whose address file names a dead head: what ``ray start
    --head`` leaves behind when its head dies without ``ray stop``, which a plain ``ray.init()``
    would join (and retry for minutes). It must start a local Ray of its own, in that
    ``RAY_TMPDIR``."""
    argv = exact_train_argv(tmp_path, run, "--workers", "1", "--resume")
    ray_tmp = Path(tempfile.mkdtemp(prefix="efdr-", dir="/tmp"))  # short: Ray's sockets below
    try:
        (ray_tmp / "ray").mkdir()
        with socket.socket() as dead:  # bound, never listening: connections are refused
            dead.bind(("127.0.0.1", 0))
            (ray_tmp / "ray" / "ray_current_cluster").write_text(
                f"127.0.0.1:{dead.getsockname()[1]}"
            )
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
            env |= {"RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
            env |= dict([FAST_POLL])
            finished = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert list((ray_tmp / "ray").glob("session_*")), "the local Ray kept its files elsewhere"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return finished
