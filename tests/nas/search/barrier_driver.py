"""A ``nas search`` driver for tests that must stop a search at an exact point, not by a race.

``python -m tests.nas.search.barrier_driver BARRIER_DIR SLOTS [--meet=N] [--gate] search CONFIG
[...]`` runs the ``nas`` command line as given, with a stand-in for the candidates' evaluation
(the command, its messages and exit status are the real ones). Each attempt at a candidate:

1. records itself as ``started-<k>.json`` in BARRIER_DIR (``k`` = 0, 1, ... in the order the
   attempts began; the Ray node ID, the spec's hash and the process);
2. with ``--gate``, waits until ``go`` or ``go-<its Ray node ID>`` exists (a test that kills a
   node never opens the gate of the attempt running there);
3. with ``--meet=N``, waits until N attempts have started (with 2 trials at a time, the first
   one waits for the second: both run at once, whatever the machine's speed; several drivers
   sharing BARRIER_DIR meet each other the same way);
4. claims one of SLOTS numbered slot files (``os.open(..., O_EXCL)``: exactly one claimant
   each) and returns a record at once; an attempt that finds every slot taken writes
   ``blocked-*`` and waits until the test kills the driver's session.

With 2 concurrent trials and 2 slots the search stops with exactly 2 trials finished and 2
blocked. Every wait ends with an error after :data:`DEADLINE_S`, so a broken test fails instead
of hanging. The settings travel with the evaluation function (Ray pickles it to the workers,
which on a cluster do not share the driver's environment).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

from ray import cloudpickle

import nas.cli as cli
import nas.search.driver as driver
from nas.search.trial import TrialSettings
from searchspace.spec import ArchSpec

# Ray workers unpickle the evaluation below; they cannot import this module by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Longest wait at a gate or a meeting, in seconds.
DEADLINE_S = 300.0


def _record_start(barrier: Path, spec: ArchSpec, node: str) -> None:
    entry = json.dumps({"node": node, "hash": spec.hash, "pid": os.getpid()})
    for number in range(10_000):
        try:
            descriptor = os.open(
                barrier / f"started-{number}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY
            )
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "w") as file:
            file.write(entry)
        return


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier: no {what} within {DEADLINE_S:.0f} s")
        time.sleep(0.1)


def barrier_evaluate(
    spec: ArchSpec,
    settings: TrialSettings,
    report,
    *,
    barrier: Path,
    slots: int,
    meet: int = 0,
    gate: bool = False,
) -> dict:
    import ray

    node = ray.get_runtime_context().get_node_id()
    _record_start(barrier, spec, node)
    if gate:
        _wait(lambda: (barrier / "go").exists() or (barrier / f"go-{node}").exists(), "go")
    if meet:
        _wait(lambda: len(list(barrier.glob("started-*.json"))) >= meet, f"{meet} started")
    for slot in range(slots):
        try:
            os.close(os.open(barrier / f"slot-{slot}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        accuracy = 0.5 + 0.01 * slot
        report({"accuracy": accuracy, "reward": accuracy})
        return {
            "spec": spec.to_string(),
            "hash": spec.hash,
            "accuracy": accuracy,
            "step_time_ms": 10.0,
            "step_time_norm": 1.0,
            "params": 1000 + slot,
            "reward": accuracy,
            "status": "ok",
            "failure": "",
        }
    (barrier / f"blocked-{os.getpid()}-{spec.hash}").touch()
    while True:  # held until the test kills this driver's session
        time.sleep(1)


def main() -> int:
    barrier, slots, *argv = sys.argv[1:]
    options: dict = {}
    while argv and argv[0].startswith("--"):
        option = argv.pop(0)
        if option == "--gate":
            options["gate"] = True
        elif option.startswith("--meet="):
            options["meet"] = int(option.removeprefix("--meet="))
        else:
            raise SystemExit(f"barrier_driver: unknown option {option}")
    driver.default_evaluate = functools.partial(
        barrier_evaluate, barrier=Path(barrier).resolve(), slots=int(slots), **options
    )
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
