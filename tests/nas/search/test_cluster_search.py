"""``nas search`` on a two-node Ray cluster, submitted with ``ray job submit``.

The cluster is ``tests/infra/ray_namespace.py``'s: a head ``a`` and a node ``b``, one CPU each,
in a private network namespace (only ``lo`` exists there; every process of it is stopped by
killing the namespace's PID 1). A trial asks for one CPU, so two trials at once run one per
node. The evaluation is the stand-in of :mod:`tests.nas.search.barrier_driver`: ``--meet=2``
holds the first trial until the second has started (so both nodes are busy at once, whatever
the machine's speed), ``--gate`` holds every attempt until the test opens its node's gate (so
the trial on node ``b`` is still running when the test kills ``b``).

The test that kills node ``b`` runs last.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nas.cli import main
from nas.search import SearchConfig
from tests import REPO
from tests.infra.ray_namespace import NamespaceCluster, cluster_fixture  # noqa: F401 (fixture)
from tests.nas.search.helpers import LOOPBACK, SMALL_SPACE, study_trials, write_config

pytestmark = pytest.mark.slow

optuna.logging.set_verbosity(optuna.logging.WARNING)


def submit_search(
    cluster: NamespaceCluster, config: Path, barrier: Path, *options: str
) -> subprocess.Popen:
    """``ray job submit -- nas search CONFIG`` with the stand-in evaluation (its output piped)."""
    barrier.mkdir(parents=True, exist_ok=True)
    # The job's driver imports the stand-in by module name; the workers get it pickled.
    argv = ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "tests.nas.search.barrier_driver",
            str(barrier), "100", *options, "search", str(config)]  # fmt: skip
    return cluster.submit(argv)


def starts(barrier: Path) -> list[dict]:
    """The attempts the stand-in recorded, in the order they began."""
    files = sorted(barrier.glob("started-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [json.loads(path.read_text()) for path in files]


def node_of_record(node: str, names: dict[str, str]) -> str:
    """``a`` or ``b`` for a trial's ``node`` (``<IP>/<first 8 hex digits of the node ID>``)."""
    ip, short = node.split("/")
    assert ip == "127.0.0.1"
    matches = [name for node_id, name in names.items() if node_id.startswith(short)]
    assert len(matches) == 1, (node, names)
    return matches[0]


def finish(job: subprocess.Popen, timeout: float = 600) -> str:
    try:
        output, _ = job.communicate(timeout=timeout)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-4000:]
    return output


def test_the_cluster_listens_on_loopback_only(cluster):
    listening = cluster.run(["ss", "-ltnH"], check=True).stdout.splitlines()
    addresses = [line.split()[3] for line in listening]
    assert len(addresses) > 5  # GCS, raylets, dashboard, job server, ...
    assert [address for address in addresses if not address.startswith(LOOPBACK)] == []


def test_a_submitted_search_runs_trials_on_both_nodes_and_says_where(cluster, tmp_path, capsys):
    names = cluster.node_names()
    assert sorted(names.values()) == ["a", "b"]
    config_path = write_config(
        tmp_path, dataset="synthetic", trials=4, concurrent=2, epochs=1, space=SMALL_SPACE,
        study="two-nodes", sampler="random",
    )  # fmt: skip
    config = SearchConfig.load(config_path)
    barrier = tmp_path / "barrier"
    output = finish(submit_search(cluster, config_path, barrier, "--meet=2"))
    assert "succeeded" in output.lower()
    assert "[4/4]" in output  # the search's progress lines reach the job's log

    trials = study_trials(config)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    placed = {t.number: node_of_record(t.user_attrs["node"], names) for t in trials}
    assert set(placed.values()) == {"a", "b"}
    first_two = starts(barrier)[:2]
    assert sorted(names[start["node"]] for start in first_two) == ["a", "b"]
    with capsys.disabled():
        print(f"\nplacement of trials (study trial number: node): {placed}")

    # nas front and the report show the node column, since the study spans two nodes.
    assert main(["front", str(config.run_dir)]) == 0
    front = capsys.readouterr().out
    header = next(line for line in front.splitlines() if line.startswith("trial"))
    assert header.split()[-2:] == ["node", "spec"]
    for trial in trials:
        assert trial.user_attrs["node"] in front
    assert main(["report", str(config.run_dir), "--no-png"]) == 0
    table = (config.run_dir / "report.html").read_text().split('id="front-two-nodes"')[1]
    assert "<th>node</th>" in table.split("</table>")[0]


def test_a_trial_whose_node_dies_is_retried_elsewhere_and_counted_once(cluster, tmp_path):
    """Runs last: it kills node b. Three trials, two at a time; every attempt waits at its
    node's gate. Once a trial runs on each node, the test kills node b and opens a's gate: the
    trial on b is started again on a (``max_failures: 1``), the third trial follows on a."""
    names = cluster.node_names()
    node_id = {name: node for node, name in names.items()}
    config_path = write_config(
        tmp_path, dataset="synthetic", trials=3, concurrent=2, epochs=1, space=SMALL_SPACE,
        study="node-death", sampler="random", max_failures=1,
    )  # fmt: skip
    config = SearchConfig.load(config_path)
    barrier = tmp_path / "barrier"
    job = submit_search(cluster, config_path, barrier, "--gate")
    try:
        deadline = time.monotonic() + 300
        while len(starts(barrier)) < 2:
            assert job.poll() is None, job.stdout.read()
            assert time.monotonic() < deadline, "two trials did not start"
            time.sleep(0.2)
        first = starts(barrier)
        assert sorted(names[start["node"]] for start in first) == ["a", "b"]
        on_b = next(start for start in first if names[start["node"]] == "b")
        assert cluster.kill_node("b")
        killed = time.monotonic()
        (barrier / f"go-{node_id['a']}").touch()  # b's gate never opens
        output = finish(job)
        print(f"\nsearch finished {time.monotonic() - killed:.1f} s after node b was killed")
    finally:
        if job.poll() is None:
            job.kill()

    trials = study_trials(config)
    summary = [(t.number, t.state.name, t.user_attrs.get("failure")) for t in trials]
    assert sorted(t.number for t in trials) == [0, 1, 2], summary
    assert all(t.state.name == "COMPLETE" and not t.user_attrs["failure"] for t in trials), summary
    assert {node_of_record(t.user_attrs["node"], names) for t in trials} == {"a"}
    retried = [t for t in trials if t.user_attrs["hash"] == on_b["hash"]]
    assert len(retried) == 1  # the trial whose node died is one trial, told once
    attempts = [start for start in starts(barrier) if start["hash"] == on_b["hash"]]
    assert [names[start["node"]] for start in attempts] == ["b", "a"]
    assert len(starts(barrier)) == 4  # 3 trials, one of them twice
    print(f"after the node died: {summary}; the last lines of the job:\n{output[-1500:]}")
