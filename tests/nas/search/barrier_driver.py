"""A ``nas search`` driver for tests that must stop a search at an exact point, not by a race.

``python -m tests.nas.search.barrier_driver BARRIER_DIR SLOTS search CONFIG [...]`` runs the
``nas`` command line as given, with a stand-in for the candidates' evaluation (the command, its
messages and exit status are the real ones): each candidate claims one of SLOTS numbered slot
files in
BARRIER_DIR (``os.open(..., O_EXCL)``: exactly one claimant each) and returns a record at once;
a candidate that finds every slot taken writes ``blocked-*`` and waits until the test kills the
driver's session. With 2 concurrent trials and 2 slots the search stops with exactly 2 trials
finished and 2 blocked, whatever the machine's speed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ray import cloudpickle

import nas.cli as cli
import nas.search.driver as driver
from searchspace.spec import ArchSpec

# Ray workers unpickle the evaluation below; they cannot import this module by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def barrier_evaluate(spec: ArchSpec, settings: dict, report) -> dict:
    barrier = Path(os.environ["EFFNAS_TEST_BARRIER"])
    for slot in range(int(os.environ["EFFNAS_TEST_SLOTS"])):
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
    os.environ["EFFNAS_TEST_BARRIER"] = barrier  # the local Ray's workers inherit these
    os.environ["EFFNAS_TEST_SLOTS"] = slots
    driver.default_evaluate = barrier_evaluate
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
