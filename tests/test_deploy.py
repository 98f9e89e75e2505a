"""The Kubernetes recipes (``deploy/kubernetes/*.yaml``): KubeRay ``RayJob`` manifests that
KubeRay would accept, entrypoints that ``nas`` parses, pods that fit the work, no password.

The required fields are KubeRay's ``ray.io/v1`` API (``rayjob_types.go``,
``raycluster_types.go``): a ``RayJob``'s ``spec.entrypoint`` and ``spec.rayClusterSpec``; a
``RayClusterSpec``'s ``headGroupSpec`` (``rayStartParams``, a map of strings, and ``template``);
each ``WorkerGroupSpec``'s ``groupName``, ``minReplicas``/``maxReplicas``, ``rayStartParams`` and
``template``; and Kubernetes' own: a container has a ``name`` and an ``image``, a volume mount
names a volume of its pod.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from nas.cli import build_parser
from nas.cli.paths import PathArgument
from nas.search import SearchConfig
from results.storage import split_password
from tests import REPO

MANIFESTS = REPO / "deploy" / "kubernetes"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def load(name: str) -> dict[str, Any]:
    documents = list(yaml.safe_load_all((MANIFESTS / name).read_text()))
    assert len(documents) == 1
    return documents[0]


def pods(job: dict) -> list[tuple[str, dict, int]]:
    """``(group, pod template spec, replicas)`` of the head (1) and every worker group."""
    cluster = job["spec"]["rayClusterSpec"]
    found = [("head", cluster["headGroupSpec"]["template"]["spec"], 1)]
    for group in cluster.get("workerGroupSpecs", []):
        found.append((group["groupName"], group["template"]["spec"], group["replicas"]))
    return found


def entrypoint(job: dict) -> list[str]:
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "nas"
    return argv[1:]


def repo_path(path: str) -> Path:
    """A path in the image (the repository is copied to ``/app``) as a path in this checkout."""
    assert path.startswith("/app/"), path
    return REPO / path.removeprefix("/app/")


def quantity(value: Any) -> float:
    """A Kubernetes CPU or count quantity (``"9"``, ``8``, ``"500m"``) as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("name", ["search-rayjob.yaml", "train-rayjob.yaml"])
def test_a_manifest_has_what_kuberays_rayjob_requires(name):
    job = load(name)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert _DNS_LABEL.match(job["metadata"]["name"])
    spec = job["spec"]
    assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip()
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    groups = [head, *cluster["workerGroupSpecs"]]
    for group in groups:
        params = group["rayStartParams"]
        assert isinstance(params, dict)
        assert all(isinstance(v, str) for v in params.values()), params  # map[string]string
    for group in cluster["workerGroupSpecs"]:
        assert _DNS_LABEL.match(group["groupName"])
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for _, pod, _ in pods(job):
        names = [container["name"] for container in pod["containers"]]
        assert len(set(names)) == len(names)
        volumes = {volume["name"] for volume in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert container["image"]
            mounts = {mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounts <= volumes, (mounts, volumes)


@pytest.mark.parametrize("name", ["search-rayjob.yaml", "train-rayjob.yaml"])
def test_no_password_in_a_manifest(name):
    job = load(name)
    for argument in entrypoint(job):
        if "://" in argument:
            assert split_password(argument)[1] is None, argument
    for _, pod, _ in pods(job):
        for container in pod["containers"]:
            for variable in container.get("env", []):
                if "PASSWORD" in variable["name"]:
                    assert "value" not in variable  # from a Secret, never written here
                    assert variable["valueFrom"]["secretKeyRef"]["key"]


@pytest.fixture
def container_paths(monkeypatch):
    """Parse the recipes' command lines without checking their paths: they name the container's
    files (``/app/...``, ``/shared/...``), which this machine does not have; the tests read the
    repository's copies through :func:`repo_path`."""
    monkeypatch.setattr(PathArgument, "__call__", lambda self, text: text)


def test_the_search_job_runs_the_paper_config_with_its_study_in_postgresql(container_paths):
    job = load("search-rayjob.yaml")
    args = build_parser().parse_args(entrypoint(job))
    assert args.command == "search" and args.storage.startswith("postgresql://")
    config = SearchConfig.load(repo_path(args.config))
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # trials go to the workers
    env = {item["name"] for item in head["template"]["spec"]["containers"][0]["env"]}
    assert "PGPASSWORD" in env  # the driver, on the head, opens the study
    # Every worker pod holds one trial, and there are enough of them for `concurrent`.
    slots = 0
    for group, pod, replicas in pods(job)[1:]:
        limits = pod["containers"][0]["resources"]["limits"]
        gpus = quantity(limits.get("nvidia.com/gpu", 0))
        assert quantity(limits["cpu"]) >= config.resources.cpus + 1, group  # + Ray's own
        assert gpus >= config.resources.gpus, group
        slots += replicas * int(gpus // config.resources.gpus if config.resources.gpus else 1)
    assert slots >= config.concurrent
    # The dataset the driver checks and the trials read is mounted on every pod.
    dataset_root = "/" + config.dataset.split(":", 1)[1].strip("/").split("/")[0]
    for group, pod, _ in pods(job):
        mounts = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert dataset_root in mounts, group


def test_the_training_job_trains_on_as_many_gpu_workers_as_it_asks_for(container_paths):
    job = load("train-rayjob.yaml")
    argv = entrypoint(job)
    assert argv[0] == "train"
    workers = int(argv[argv.index("--workers") + 1])
    # Every flag is nas train's own.
    args = build_parser().parse_args(argv)
    assert args.workers == workers
    # One GPU per worker, and Ray Train's checkpoints where every node reaches them.
    assert args.gpus_per_worker == 1 and args.storage_path.startswith("/shared/")
    assert args.out.startswith("/shared/") and args.dataset.startswith("imagefolder:/data/")
    gpu_workers = sum(
        replicas
        for _, pod, replicas in pods(job)[1:]
        if quantity(pod["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
    )
    assert gpu_workers >= workers
    # Checkpoints go to --out: a volume that every pod mounts, the head included.
    for group, pod, _ in pods(job):
        mounts = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert "/shared" in mounts, group
