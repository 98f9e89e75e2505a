"""Two Ray nodes on this machine, in a private namespace: placement, token, node death.

One cluster for the module (head ``a`` and node ``b``, 1 CPU and a custom resource each); the
test that kills node ``b`` runs last. The fixture's teardown checks that no process of the
cluster is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.infra.ray_namespace import (  # noqa: F401 (fixture)
    NamespaceCluster,
    cluster_fixture,
    namespace_support,
    processes_mentioning,
)
from tests.infra.system_tools import missing

pytestmark = pytest.mark.slow

JOBS = Path(__file__).parent / "jobs"


def _job_result(cluster: NamespaceCluster, argv: list[str], timeout: float = 300) -> object:
    """Submit ``argv`` as a Ray job, wait for it, return the JSON it printed after ``RESULT``."""
    process = cluster.submit(argv)
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, output
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_each_node_has_its_own_cpus_resource_and_temp_dir(cluster):
    alive = cluster.wait_for_nodes(2)
    by_name = {}
    for node in alive:
        custom = [key for key in node["Resources"] if key.startswith("node_")]
        assert len(custom) == 1
        by_name[custom[0].removeprefix("node_")] = node
    assert sorted(by_name) == ["a", "b"]
    for name, node in by_name.items():
        assert node["Resources"]["CPU"] == 1
        assert node["NodeManagerAddress"] == "127.0.0.1"
        assert Path(node["ObjectStoreSocketName"]).is_relative_to(cluster.nodes[name].temp_dir)


def test_a_job_runs_tasks_on_both_nodes(cluster):
    result = _job_result(cluster, [sys.executable, str(JOBS / "placement.py")])
    nodes = result["nodes"]
    assert sorted(nodes.values()) == [["node_a"], ["node_b"]]
    for name, task in zip(("a", "b"), result["pinned"], strict=True):
        assert nodes[task["node_id"]] == [f"node_{name}"]
        assert task["assigned"] == {"CPU": 1.0, f"node_{name}": 1.0}


_CONNECT = """
import sys
from nas.cluster import RayAddressError, connect_ray
try:
    connect_ray(sys.argv[1], log_to_driver=False)
except RayAddressError as error:
    print("ERROR", error)
else:
    import ray
    print("CONNECTED", len([n for n in ray.nodes() if n["Alive"]]))
"""


def test_connect_ray_joins_with_the_token_and_names_a_refused_one(cluster, tmp_path):
    """``ray.init`` without the token fails after ~20 s of retries; connect_ray says why."""
    repo = str(Path(__file__).resolve().parents[2])
    argv = [sys.executable, "-c", _CONNECT, cluster.gcs_address]
    with_token = {**cluster.env, "PYTHONPATH": repo}
    assert cluster.run(argv, env=with_token, timeout=120).stdout.split() == ["CONNECTED", "2"]

    without = {key: value for key, value in with_token.items() if not key.startswith("RAY_AUTH")}
    without["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    result = cluster.run(argv, env=without, timeout=120)
    assert result.stdout.strip() == (
        f"ERROR Ray at {cluster.gcs_address!r} refused this client's authentication token: "
        "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token, "
        "~/.ray/auth_token on its head"
    ), result.stderr[-2000:]


def test_a_tune_trial_whose_node_dies_is_retried_on_the_other_node(cluster, tmp_path):
    """Runs last: it kills node b. Trials need 1 CPU each and each node has 1: one per node."""
    markers = cluster.root / "markers"
    markers.mkdir()
    names = cluster.node_names()
    node_of = {name: node_id for node_id, name in names.items()}
    job = cluster.submit([sys.executable, str(JOBS / "tune_node_death.py"), str(markers)])
    try:
        deadline = time.monotonic() + 180
        while len(list(markers.glob("started-*-0.json"))) < 2:
            assert job.poll() is None, job.stdout.read()
            assert time.monotonic() < deadline, "the two trials did not start"
            time.sleep(0.2)
        first = [json.loads(p.read_text()) for p in markers.glob("started-*-0.json")]
        assert sorted(names[attempt["node_id"]] for attempt in first) == ["a", "b"]
        on_b = next(attempt for attempt in first if names[attempt["node_id"]] == "b")

        assert cluster.kill_node("b")
        killed = time.monotonic()
        (markers / f"go-{node_of['a']}").touch()  # node b never gets its go file
        output, _ = job.communicate(timeout=240)
        print(f"\njob finished {time.monotonic() - killed:.1f} s after node b was killed")
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output
    outcome = json.loads(
        next(line for line in output.splitlines() if line.startswith("RESULT "))[7:]
    )
    assert sorted(trial["x"] for trial in outcome) == [1, 2]
    assert all(trial["error"] is None and names[trial["node_id"]] == "a" for trial in outcome)
    retried = next(trial for trial in outcome if trial["x"] == on_b["x"])
    assert retried["attempt"] == 1  # its second attempt, on node a
    assert len(list(markers.glob(f"started-{on_b['trial']}-*.json"))) == 2


def test_stop_kills_every_process_of_the_namespace_also_when_the_body_fails():
    reason = namespace_support()
    if reason is not None:
        missing(reason)
    tag = f"{time.time_ns() % 10**6}.5"  # a unique sleep argument to find the processes by
    with pytest.raises(RuntimeError, match="body failed"), NamespaceCluster() as cluster:
        cluster.popen(["sleep", tag], stdout=subprocess.DEVNULL)
        # A daemon, like Ray's: double-forked, re-parented to the namespace's PID 1.
        cluster.run(["sh", "-c", f"setsid sleep {tag} >/dev/null 2>&1 &"], check=True)
        deadline = time.monotonic() + 30
        while len(processes_mentioning(f"sleep {tag}")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        raise RuntimeError("body failed")
    assert processes_mentioning(f"sleep {tag}") == []
    assert not cluster.root.exists()
