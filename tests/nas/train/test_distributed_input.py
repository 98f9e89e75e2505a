"""``nas train --workers N``: bad input is one line and exit status 2, before any Ray starts.

No test here starts Ray (each checks that this process has none afterwards); this module is
kept apart from ``test_distributed.py``, whose module-wide local Ray would otherwise be reused
by ``nas train`` instead of being refused or started.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from nas.cli import main
from nas.errors import ConfigError
from nas.train.config import DistributedConfig
from tests.nas.train.test_progressive import DATASET, make_config, tiny32


@pytest.fixture
def argv(tmp_path):
    spec = tmp_path / "tiny.yaml"
    tiny32().save(spec)
    return [
        "train", str(spec), "--dataset", DATASET, "--epochs", "2", "--stages", "2",
        "--batch-size", "20", "--device", "cpu", "--out", str(tmp_path / "run"),
    ]  # fmt: skip


def one_line_error(capsys, argv) -> str:
    import ray

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nas train: error: "), err
    assert not ray.is_initialized()
    return err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "0"], "workers must be an integer of at least 1, got 0"),
        (["--workers", "2", "--gpus-per-worker", "2"], "gpus_per_worker must be an integer in"),
        (["--workers", "2", "--cpus-per-worker", "0"], "cpus_per_worker must be an integer of"),
        (["--workers", "3"], "batch_size 20 is the global batch and must split evenly over the 3"),
        (["--workers", "2", "--device", "cuda"], "device 'cuda' with gpus_per_worker 0"),
        (["--workers", "2", "--cpus-per-worker", "64"], "needs 128 CPUs; this machine has"),
        (["--gpus-per-worker", "1"], "--gpus-per-worker needs --workers N"),
        (["--address", "127.0.0.1:6379"], "--address needs --workers N"),
        (["--workers", "2", "--dataset", "cifar10:/no/such"], "'/no/such' does not exist"),
        (["--workers", "2", "--stages", "3"], "epochs must be at least the number of stages"),
        (["--workers", "2", "--resume"], "there is no checkpoint"),
    ],
)
def test_bad_input_is_one_line_before_ray_starts(argv, capsys, extra, message):
    assert message in one_line_error(capsys, argv + extra)


def test_gpus_this_machine_does_not_have_are_refused(argv, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # this CI machine, or any
    argv = [arg for arg in argv if arg not in ("--device", "cpu")]
    err = one_line_error(capsys, [*argv, "--workers", "2", "--gpus-per-worker", "1"])
    assert "gpus_per_worker 1 with 2 workers needs 2 GPUs; this machine has 0" in err


def test_a_dead_address_fails_within_seconds(argv, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        started = time.monotonic()
        err = one_line_error(capsys, [*argv, "--workers", "2", "--address", address])
    assert f"Ray address {address!r} does not answer: Connection refused" in err
    print(f"\nrefused in {time.monotonic() - started:.1f} s")


def test_a_distributed_config_checks_its_training_config():
    DistributedConfig(workers=4).check(make_config(batch_size=20))
    with pytest.raises(ConfigError, match="device 'cpu' with gpus_per_worker 1"):
        DistributedConfig(workers=1, gpus_per_worker=1).check(make_config())
    with pytest.raises(ConfigError, match="storage_path must be a path or URI"):
        DistributedConfig(workers=1, storage_path=" ")


def test_an_interrupted_fit_is_a_keyboard_interrupt_and_leaves_no_storage(tmp_path, monkeypatch):
    """Ctrl-C while Ray Train's fit() waits ends it with SystemExit (Ray's handlers); nas train
    reports that as an interruption (exit 130, "every finished epoch is saved")."""
    import ray.train.torch

    import nas.train.distributed as distributed

    class Interrupted:
        def __init__(self, *args, **kwargs):
            self.run_config = kwargs["run_config"]

        def fit(self):
            (Path(self.run_config.storage_path) / self.run_config.name).mkdir(parents=True)
            raise SystemExit(1)  # what ray.get raises when SIGINT arrives

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        distributed._fit({}, DistributedConfig(workers=1), tmp_path)
    assert list(tmp_path.iterdir()) == []  # the default Ray Train storage is gone


def test_a_worker_receives_typed_settings_and_a_wrong_key_fails_at_construction():
    import dataclasses

    from nas.train.distributed import WorkerSettings

    settings = WorkerSettings(tiny32(), make_config(), "/tmp/run", None, 1, 0)
    assert settings.progress is False and settings.on_epoch_start is None
    with pytest.raises(TypeError, match="cpu_per_worker"):
        WorkerSettings(tiny32(), make_config(), "/tmp/run", None, 1, 0, cpu_per_worker=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.progress = True
