"""A multi-node Ray cluster on one machine, inside a private network and PID namespace.

:class:`NamespaceCluster` creates the namespaces with ``unshare --net --pid --fork --mount-proc``
(as root; otherwise with ``--user --map-root-user`` too, where unprivileged user namespaces are
allowed), brings up ``lo`` (the only interface there, so everything in it is on 127.0.0.1 and
reachable from nowhere else), then starts ``ray start --head`` and further ``ray start
--address=...`` nodes, each with its own ``--temp-dir``, CPU count and custom resource, and runs
commands (``ray job submit ...``) in the namespace through ``nsenter``.

The namespace's first process is a small reaper (PID 1 there); killing it makes the kernel kill
every process in the namespace, which is how :meth:`NamespaceCluster.stop` tears everything down
(no ``ray stop``, no search by name). ``unshare`` runs with a parent-death signal and
``--kill-child``, so the namespace also dies when the test process dies.

Token authentication: Ray 2.60 turns it on by default for a new cluster and keeps its token in
``~/.ray/auth_token``. The cluster here gets its own random token through ``RAY_AUTH_MODE=token``
and ``RAY_AUTH_TOKEN`` in the environment of every process it starts, so nothing is read from or
written to the home directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra.system_tools import missing

__all__ = [
    "NamespaceCluster",
    "NamespaceUnavailable",
    "RayNode",
    "cluster_fixture",
    "namespace_support",
    "processes_mentioning",
    "two_node_cluster",
]

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_PORT = 6379  # fixed ports are safe: nothing else listens in this network namespace
DASHBOARD_PORT = 8265

# PID 1 of the namespace: reaps every orphan (Ray's daemons are re-parented to it) until killed.
_REAPER = """
import os, time
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        time.sleep(0.2)
"""

_PR_SET_PDEATHSIG = 1


class NamespaceUnavailable(RuntimeError):
    """This machine cannot create the namespaces (the message says what is missing)."""


def _unshare_argv() -> list[str]:
    argv = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if os.geteuid() != 0:
        # An unprivileged user may create namespaces inside a user namespace of its own.
        argv[1:1] = ["--user", "--map-root-user"]
    return argv


def namespace_support() -> str | None:
    """None if namespaces with a loopback interface can be made here, else why not (one line)."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install util-linux and iproute2 (apt-get install -y ...)"
    probe = subprocess.run(
        [*_unshare_argv(), "ip", "link", "set", "lo", "up"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"cannot create a network/PID namespace here: {probe.stderr.strip()}"
    return None


def _set_parent_death_signal() -> None:
    # Runs in the child between fork and exec: unshare gets SIGKILL when the test process dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class RayNode:
    """One ``ray start`` node: its name, custom resource, temp dir and CPU count."""

    name: str
    num_cpus: int
    temp_dir: Path
    resources: dict[str, float] = field(default_factory=dict)

    def raylet_pids(self) -> list[int]:
        """Host PIDs of this node's raylet (found by its temp dir on the command line)."""
        return _pids_with(["raylet", f"--temp_dir={self.temp_dir}"], "raylet")


def _pids_with(needles: Sequence[str], executable: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(executable.encode()):
            continue
        joined = b" ".join(argv).decode(errors="replace")
        if all(needle in joined for needle in needles):
            pids.append(int(entry.name))
    return pids


class NamespaceCluster:
    """A Ray head and worker nodes in a private namespace; use as a context manager.

    Attributes:
        root: a temporary directory for the nodes' temp dirs, scripts and outputs (short path:
            Ray puts unix sockets below each temp dir, and those paths are limited to 107 bytes).
        env: the environment every command in the namespace gets (token, loopback settings).
        nodes: the nodes started, by name.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="efns-", dir="/tmp"))
        self.token = secrets.token_hex(32)
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            # "0" (what keeps a local Ray on 127.0.0.1 outside) makes `ray start --address`
            # refuse to join ("Multi-node Ray clusters are not supported"); in here the only
            # interface is lo, so every node is on 127.0.0.1 anyway.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            # Ray Tune / Train print their progress with the old reporter (readable in logs).
            "RAY_AIR_NEW_OUTPUT": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: dict[str, RayNode] = {}
        self._unshare: subprocess.Popen | None = None
        self._init_pid: int | None = None

    # -- namespace ------------------------------------------------------------------------

    def open(self) -> None:
        """Create the namespace (PID 1: the reaper) and bring ``lo`` up."""
        self._unshare = subprocess.Popen(
            [*_unshare_argv(), sys.executable, "-c", _REAPER],
            stdin=subprocess.DEVNULL,
            preexec_fn=_set_parent_death_signal,
        )
        deadline = time.monotonic() + 30
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        while self._init_pid is None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self._init_pid = int(children.read_text().split()[0])
            if self._init_pid is None:
                if self._unshare.poll() is not None or time.monotonic() > deadline:
                    raise NamespaceUnavailable("unshare did not start its namespace")
                time.sleep(0.05)
        self.run(["ip", "link", "set", "lo", "up"], check=True)

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as a command that runs inside the namespace."""
        assert self._init_pid is not None, "namespace not open"
        enter = ["nsenter", "-t", str(self._init_pid), "-n", "-p", "-m"]
        if os.geteuid() != 0:
            enter += ["-U", "--preserve-credentials"]
        return [*enter, "--", *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = False, timeout: float = 300, **kwargs
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` in the namespace and wait for it; output captured as text."""
        result = subprocess.run(
            self.nsenter_argv(argv),
            env=kwargs.pop("env", self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` in the namespace without waiting (stdout and stderr as text pipes)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        return subprocess.Popen(
            self.nsenter_argv(argv), env=kwargs.pop("env", self.env), text=True, **kwargs
        )

    # -- Ray nodes --------------------------------------------------------------------------

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{HEAD_PORT}"

    @property
    def job_address(self) -> str:
        return f"http://127.0.0.1:{DASHBOARD_PORT}"

    def start_head(self, name: str = "a", num_cpus: int = 1, **resources: float) -> RayNode:
        """``ray start --head`` with a dashboard and job server on 127.0.0.1."""
        node = self._node(name, num_cpus, resources)
        self.run(
            [
                RAY,
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={HEAD_PORT}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={DASHBOARD_PORT}",
                *self._node_flags(node),
            ],
            check=True,
        )
        return node

    def start_node(self, name: str = "b", num_cpus: int = 1, **resources: float) -> RayNode:
        """``ray start --address=<head>``: one more node with its own temp dir and resources."""
        node = self._node(name, num_cpus, resources)
        self.run(
            [
                RAY,
                "start",
                f"--address={self.gcs_address}",
                "--node-ip-address=127.0.0.1",
                *self._node_flags(node),
            ],
            check=True,
        )
        return node

    def _node(self, name: str, num_cpus: int, resources: dict[str, float]) -> RayNode:
        temp_dir = self.root / name
        temp_dir.mkdir(exist_ok=True)
        node = RayNode(name, num_cpus, temp_dir, {f"node_{name}": 100.0, **resources})
        self.nodes[name] = node
        return node

    @staticmethod
    def _node_flags(node: RayNode) -> list[str]:
        return [
            f"--temp-dir={node.temp_dir}",
            f"--num-cpus={node.num_cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps(node.resources)}",
            "--disable-usage-stats",
        ]

    def wait_for_nodes(self, count: int, timeout: float = 60) -> list[dict]:
        """Wait until ``count`` nodes are alive; returns ``ray.nodes()`` of the live ones."""
        script = (
            "import json, ray\n"
            f"ray.init(address={self.gcs_address!r}, log_to_driver=False)\n"
            "print(json.dumps([n for n in ray.nodes() if n['Alive']]))\n"
        )
        deadline = time.monotonic() + timeout
        while True:
            result = self.run([sys.executable, "-c", script], timeout=timeout)
            alive = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout else []
            if len(alive) >= count:
                return alive
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(alive)} of {count} Ray nodes alive: {result.stderr}")
            time.sleep(0.5)

    def node_names(self) -> dict[str, str]:
        """Node ID -> node name (``a``, ``b``) of every live node, from its custom resource."""
        names = {}
        for node in self.wait_for_nodes(1):
            custom = [key for key in node["Resources"] if key.startswith("node_")]
            names[node["NodeID"]] = custom[0].removeprefix("node_")
        return names

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL the raylet of node ``name`` (its workers exit when their raylet is gone)."""
        pids = self.nodes[name].raylet_pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return pids

    def submit(self, argv: Sequence[str], timeout: float = 300, **kwargs) -> subprocess.Popen:
        """``ray job submit`` to the head's job server; waits for the job and streams its log."""
        return self.popen(
            [RAY, "job", "submit", f"--address={self.job_address}", "--", *argv],
            **kwargs,
        )

    # -- teardown ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Kill the namespace's PID 1 (the kernel then kills every process in it), remove root."""
        try:
            # Without a known PID 1, killing unshare kills it (--kill-child).
            victim = self._init_pid or (self._unshare.pid if self._unshare else None)
            if victim is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            if self._unshare is not None:
                # unshare exits once its child, PID 1, has exited; PID 1 exits only after every
                # other process of its namespace has.
                self._unshare.wait(timeout=60)
        finally:
            self._init_pid = None
            self._unshare = None
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> NamespaceCluster:
        try:
            self.open()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


@contextlib.contextmanager
def two_node_cluster(cpus_a: int = 1, cpus_b: int = 1) -> Iterator[NamespaceCluster]:
    """A head ``a`` (resource ``node_a``) and a node ``b`` (``node_b``), both alive."""
    with NamespaceCluster() as cluster:
        cluster.start_head("a", cpus_a)
        cluster.start_node("b", cpus_b)
        cluster.wait_for_nodes(2)
        yield cluster


def processes_mentioning(text: str) -> list[str]:
    """``"<pid>: <command line>"`` of every process (but this one) whose command line holds
    ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="module", name="cluster")
def cluster_fixture() -> Iterator[NamespaceCluster]:
    """Fixture ``cluster``: :func:`two_node_cluster` for a test module (import it to use it).

    Skipped where namespaces cannot be made (failed on CI). The teardown checks that no
    process of the cluster is left. A test that kills node ``b`` must run last in its module.
    """
    reason = namespace_support()
    if reason is not None:
        missing(reason)
    started = time.monotonic()
    with two_node_cluster() as cluster:
        print(f"\ntwo-node cluster up in {time.monotonic() - started:.1f} s")
        root = str(cluster.root)
        yield cluster
        stopping = time.monotonic()
    print(f"cluster down in {time.monotonic() - stopping:.1f} s")
    assert processes_mentioning(root) == []
