"""Ray Train on CPU: 2 DDP workers agree with one process; a dead worker resumes from a checkpoint.

One local Ray (127.0.0.1, 2 CPUs) for the module. Reference numbers come from
``ray_train_probe.train_one_process``, which is plain torch in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch

from nas.cluster import start_local_ray
from tests.infra.ray_train_probe import DEFAULTS, load_state, train_distributed, train_one_process

pytestmark = pytest.mark.slow

# float32, 18 SGD steps with momentum, sums in a different order: differences stay near 1e-7.
ATOL, RTOL = 1e-5, 1e-4
INFRA = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this test process")
    temp_dir = tempfile.mkdtemp(prefix="eftr-", dir="/tmp")  # short: Ray's sockets live below
    started = time.monotonic()
    # Ray pickles module-level functions by reference: its workers must import ray_train_probe
    # (and nas). A local Ray's workers inherit this process's environment, not its sys.path.
    path = os.pathsep.join([str(INFRA), str(INFRA.parents[1]), os.environ.get("PYTHONPATH", "")])
    start_local_ray(
        num_cpus=2,
        temp_dir=temp_dir,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path.rstrip(os.pathsep)}},
    )
    print(f"\nlocal Ray up in {time.monotonic() - started:.1f} s")
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _final_state(result) -> dict:
    assert result.error is None, result.error
    with result.checkpoint.as_directory() as directory:
        return load_state(directory)


def _max_difference(a: dict, b: dict, keys) -> float:
    return max((a[key].float() - b[key].float()).abs().max().item() for key in keys)


def _parameters(state: dict) -> list[str]:
    return [
        key for key, value in state.items() if value.is_floating_point() and "running" not in key
    ]


def test_two_workers_match_one_process_and_resume_after_a_worker_dies(local_ray, tmp_path):
    """Rank 1 dies at the start of epoch 2; the run resumes from epoch 1's checkpoint."""
    markers = tmp_path / "markers"
    markers.mkdir()
    config = {"fail_at_epoch": 2, "marker_dir": str(markers), "epochs": 4}
    result, seconds = train_distributed(config, tmp_path / "storage", max_failures=1)
    print(f"\nTorchTrainer.fit with one worker failure: {seconds:.1f} s")
    state = _final_state(result)

    assert (markers / "failed-once").exists()
    starts = [json.loads(line) for line in (markers / "starts.jsonl").read_text().splitlines()]
    # The restart resumes from the last checkpoint the controller had registered when it saw the
    # worker die: epoch 1's, or epoch 0's when rank 0's epoch-1 report was still in flight (the
    # controller polls reports). Either way, every later epoch is trained again from that state.
    resumed_at = max(s["start_epoch"] for s in starts)
    assert resumed_at in (1, 2)
    assert sorted((s["rank"], s["start_epoch"]) for s in starts) == [
        (0, 0),
        (0, resumed_at),
        (1, 0),
        (1, resumed_at),
    ]
    print(f"resumed at epoch {resumed_at}")
    assert state["epoch"] == result.metrics["epoch"] == 3
    assert list(result.metrics_dataframe["epoch"]) == [0, 1, 2, 3]

    reference = train_one_process({**DEFAULTS, "epochs": 4})
    assert set(state["model"]) == set(reference)
    for key in reference:
        torch.testing.assert_close(state["model"][key], reference[key], atol=ATOL, rtol=RTOL)
    # The run changed the weights: a comparison with the initial ones would fail.
    untrained = train_one_process({**DEFAULTS, "epochs": 0})
    assert _max_difference(state["model"], untrained, _parameters(untrained)) > 0.05


def test_batchnorm_statistics_are_per_worker_under_ddp_on_cpu(local_ray, tmp_path):
    """BatchNorm normalises each worker's half batch: DDP = per-slice gradients, not full batch.

    ``SyncBatchNorm`` would normalise over the global batch but raises on CPU tensors. The
    running statistics are rank 0's (DDP broadcasts rank 0's buffers before each forward), so
    only the trained parameters are compared with the micro-batch reference.
    """
    result, _ = train_distributed({"batchnorm": True}, tmp_path / "storage")
    state = _final_state(result)["model"]
    per_slice = train_one_process({"batchnorm": True}, micro_batches=2)
    full_batch = train_one_process({"batchnorm": True}, micro_batches=1)
    parameters = _parameters(per_slice)
    for key in parameters:
        torch.testing.assert_close(state[key], per_slice[key], atol=ATOL, rtol=RTOL)
    difference = _max_difference(state, full_batch, parameters)
    print(f"\nBatchNorm model, DDP vs full-batch one process: max |difference| {difference:.3g}")
    assert difference > 100 * ATOL


def test_sync_batchnorm_refuses_cpu_tensors(tmp_path):
    """Within a process group (as under Ray Train), SyncBatchNorm's forward rejects CPU input."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        layer = torch.nn.SyncBatchNorm(4)
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            layer(torch.randn(8, 4))
    finally:
        torch.distributed.destroy_process_group()
