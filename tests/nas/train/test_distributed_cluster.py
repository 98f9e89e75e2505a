"""``nas train --workers 2`` submitted with ``ray job submit`` to a two-node cluster.

The cluster (tests/infra/ray_namespace.py) is two Ray nodes of 1 CPU each in a private network
namespace, so the two 1-CPU workers land one on each node and DDP's gloo traffic crosses between
them. The driver runs as the job's entrypoint on the head and connects through ``RAY_ADDRESS``,
which the job sets. The result must equal the in-process reference of test_distributed.py: one
process computing each step as two workers do.
"""

from __future__ import annotations

import json

import pytest

from tests.infra.ray_namespace import namespace_support, two_node_cluster
from tests.infra.system_tools import missing
from tests.nas.train.test_distributed import (
    FAST_POLL,
    assert_same_run,
    exact_train_argv,
    reference,
)

pytestmark = pytest.mark.slow


def test_a_submitted_job_trains_on_two_nodes(tmp_path, monkeypatch):
    reason = namespace_support()
    if reason is not None:
        missing(reason)
    run = tmp_path / "run"
    argv = ["env", "=".join(FAST_POLL), *exact_train_argv(tmp_path, run, "--workers", "2")]
    with two_node_cluster() as cluster:
        job = cluster.submit(argv)
        try:
            output, _ = job.communicate(timeout=600)
        finally:
            if job.poll() is None:
                job.kill()
    assert job.returncode == 0, output[-4000:]
    assert "trained tiny on synthetic:200: 4 epochs in 2 stages" in output
    record = json.loads((run / "metrics.json").read_text())
    assert record["workers"] == 2

    expected = reference(tmp_path, "reference", 4, monkeypatch)
    differences = assert_same_run(run, expected)
    print(f"\n2 workers on 2 nodes vs one process computing their split: {differences}")
