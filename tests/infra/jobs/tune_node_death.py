"""Ray job: two Tune trials, one per node (1 CPU each); the test kills node b mid-trial.

Each trial attempt writes ``<dir>/started-<trial>-<n>.json`` (its node), then waits for
``<dir>/go-<its node id>``; the test creates that file only for the node that survives, so the
attempt on the node it kills can never finish on its own. ``FailureConfig(max_failures=1)``: the
trial whose node died is started again, on the surviving node. Prints the outcome as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import ray
from ray import tune


def trainable(config: dict) -> None:
    directory = Path(config["dir"])
    node = ray.get_runtime_context().get_node_id()
    trial = tune.get_context().get_trial_id()
    attempt = len(list(directory.glob(f"started-{trial}-*.json")))
    marker = directory / f"started-{trial}-{attempt}.json"
    marker.write_text(json.dumps({"trial": trial, "node_id": node, "x": config["x"]}))
    deadline = time.monotonic() + 240
    while not (directory / f"go-{node}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no go-{node}")
        time.sleep(0.1)
    tune.report({"node_id": node, "score": config["x"], "attempt": attempt})


def main(directory: str) -> None:
    ray.init()
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1, 2]), "dir": directory},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(
            name="node-death",
            storage_path=str(Path(directory) / "tune"),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    results = tuner.fit()
    outcome = [
        {
            "x": result.config["x"],
            "node_id": (result.metrics or {}).get("node_id"),
            "attempt": (result.metrics or {}).get("attempt"),
            "error": None if result.error is None else type(result.error).__name__,
        }
        for result in results
    ]
    print("RESULT " + json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
