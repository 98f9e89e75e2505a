"""``nas train`` held after a given epoch, for tests that stop a run at an exact point.

``python -m tests.nas.train.hold_after_epoch EPOCH MARKER train ARCH ...`` runs the ``nas``
command line as given; after epoch EPOCH (its checkpoint and metrics already written) it creates
MARKER and waits, so that the test can kill or interrupt it there and nowhere else.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import time
from pathlib import Path

import nas.cli as cli
import nas.train.progressive as progressive

_train_progressive = progressive.train_progressive


def main() -> int:
    epoch_to_hold, marker, *argv = sys.argv[1:]
    # Ctrl-C as a terminal delivers it: a process inherits an ignored SIGINT from its parent, and
    # Python then installs no KeyboardInterrupt handler. A pytest-xdist worker of a whole-suite
    # run was seen with SIGINT and SIGQUIT ignored (SigIgn 0x6); the held run then never stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGUSR1 prints every thread's stack, for a test whose wait on this process runs out.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def hold(epoch: int, metrics: dict) -> None:
        if epoch == int(epoch_to_hold):
            Path(marker).touch()
            while True:  # until the test stops this process
                time.sleep(0.1)

    def train_then_hold(*args, **kwargs):
        return _train_progressive(*args, **kwargs, on_epoch_end=hold)

    progressive.train_progressive = train_then_hold
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
