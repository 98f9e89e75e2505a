"""Ray job: one task pinned to each node's custom resource; prints where each ran as JSON.

Run by ``tests/infra/test_ray_namespace.py`` through ``ray job submit`` on a two-node cluster.
"""

from __future__ import annotations

import json

import ray


@ray.remote(num_cpus=1)
def where() -> dict:
    context = ray.get_runtime_context()
    return {"node_id": context.get_node_id(), "assigned": context.get_assigned_resources()}


def main() -> None:
    ray.init()  # the job's driver: RAY_ADDRESS is set by the job server
    pinned = [where.options(resources={f"node_{name}": 1}).remote() for name in ("a", "b")]
    nodes = {
        node["NodeID"]: sorted(key for key in node["Resources"] if key.startswith("node_"))
        for node in ray.nodes()
        if node["Alive"]
    }
    print("RESULT " + json.dumps({"pinned": ray.get(pinned), "nodes": nodes}), flush=True)


if __name__ == "__main__":
    main()
