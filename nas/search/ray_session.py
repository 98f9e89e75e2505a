"""Where the search's trials run: a local Ray on 127.0.0.1, or the cluster the user names."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from nas.errors import ConfigError

__all__ = ["keep_local_ray_on_loopback", "ray_address", "ray_session"]


def keep_local_ray_on_loopback() -> None:
    """Make a Ray started in this process listen on 127.0.0.1 only.

    Ray picks the machine's network address for a local instance unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and it reads that variable once, when ``ray`` is first
    imported: set it before the import, and its spawned processes inherit it. If ``ray`` was
    already imported (a notebook, a test session), the constant it read is updated too; there is
    no public switch for this.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def ray_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``, else ``None`` (start one here)."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to a cluster (``--address`` or ``RAY_ADDRESS``) or start Ray here on 127.0.0.1."""
    address = ray_address(address)
    if not address:
        keep_local_ray_on_loopback()
    import ray

    if ray.is_initialized():
        yield
        return
    # ray.init installs a SIGTERM handler of its own that aborts the driver; keep the one the
    # process had (``nas`` stops on SIGTERM as on Ctrl-C, saving what it has done).
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"cannot connect to Ray at {address!r}: {error}") from None
    else:
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
        )
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        ray.shutdown()
