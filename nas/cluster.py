"""Where work runs: a Ray that is really local (127.0.0.1), or a given cluster reached fast.

:func:`start_local_ray` starts a new Ray on 127.0.0.1 with ``address="local"``, so that an
address an earlier ``ray start`` left behind is never joined (and never waited on for minutes);
:func:`probe_address` opens a TCP connection to a given address first, with a timeout, and
raises a one-line :class:`~nas.errors.RayAddressError` naming it when nothing answers.
:func:`parse_address` reads the accepted forms (``host:port``, ``ray://``, ``http(s)://``,
``auto``), and :func:`ray_session` is how the search, ``nas fidelity`` and ``nas train`` get
their Ray. Why, and the address forms: docs/searching.md, "Which Ray".
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nas.errors import RayAddressError

__all__ = [
    "DEFAULT_PROBE_TIMEOUT",
    "RayAddress",
    "RayAddressError",
    "connect_ray",
    "keep_local_ray_on_loopback",
    "parse_address",
    "probe_address",
    "ray_session",
    "requested_address",
    "start_local_ray",
]

# Seconds a TCP connection to a given Ray address may take before effnas gives up.
DEFAULT_PROBE_TIMEOUT = 5.0

_SCHEMES = {"ray": "Ray Client", "http": "job server", "https": "job server"}


@dataclass(frozen=True)
class RayAddress:
    """A parsed Ray address.

    Attributes:
        text: the address as given.
        scheme: ``""`` (GCS ``host:port``), ``"ray"``, ``"http"`` or ``"https"``.
        host: the host name or IP address (IPv6 without brackets).
        port: the TCP port.
    """

    text: str
    scheme: str
    host: str
    port: int

    @property
    def for_ray_init(self) -> str:
        """The address as ``ray.init`` takes it (job-server addresses are not accepted there)."""
        if self.scheme in ("http", "https"):
            raise RayAddressError(
                f"Ray address {self.text!r} is a job server (for `ray job submit`); "
                "connecting a driver needs the head's GCS address host:port (default port 6379)"
            )
        return self.text


def requested_address(address: str | None) -> str | None:
    """The cluster the user asked for: ``address`` (``--address``), else ``RAY_ADDRESS``, else None.

    None means "start a local Ray" (see :func:`start_local_ray`); ``local`` means the same.
    """
    chosen = address or os.environ.get("RAY_ADDRESS") or None
    return None if chosen is None or chosen.strip() == "local" else chosen.strip()


def parse_address(address: str) -> RayAddress:
    """Parse ``host:port``, ``ray://host:port`` or ``http(s)://host:port``.

    Raises:
        RayAddressError: any other form (the message names the address and the forms).
    """
    text = address.strip()
    has_scheme = "://" in text
    try:
        parts = urlsplit(text if has_scheme else f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        host, port = None, None
    scheme = parts.scheme if has_scheme else ""
    if scheme not in ("", *_SCHEMES) or not host or port is None or parts.path not in ("", "/"):
        raise RayAddressError(
            f"Ray address {address!r} is not host:port, ray://host:port or http(s)://host:port"
        )
    return RayAddress(text=text, scheme=scheme, host=host, port=port)


def _resolve_auto() -> str:
    # Ray's own resolution of "auto" (address file, then a GCS process on this machine); not a
    # public API, so any failure is reported as "no cluster found".
    from ray._private import services

    try:
        found = services.canonicalize_bootstrap_address("auto")
    except Exception:
        found = None
    if not found:
        raise RayAddressError("Ray address 'auto': no running Ray cluster found on this machine")
    return found


def probe_address(address: str, timeout: float = DEFAULT_PROBE_TIMEOUT) -> RayAddress:
    """Check within ``timeout`` seconds that something accepts TCP connections at ``address``.

    A TCP connect is what tells "nothing there" from "there": a refused or silent port fails
    here in at most ``timeout`` seconds, instead of ``ray.init``'s minutes of retries. (It does
    not prove the listener is Ray; ``ray.init`` then reports that.)

    Returns:
        The parsed address (``auto`` resolved to the ``host:port`` it stands for).

    Raises:
        RayAddressError: malformed, the host does not resolve, or no TCP connection within
            ``timeout`` (message: ``Ray address '<address>' does not answer: <reason>``).
    """
    if address.strip() == "auto":
        address = _resolve_auto()
    parsed = parse_address(address)
    try:
        with socket.create_connection((parsed.host, parsed.port), timeout=timeout):
            pass
    except socket.gaierror as error:
        raise RayAddressError(
            f"Ray address {parsed.text!r}: host {parsed.host!r} does not resolve ({error.strerror})"
        ) from None
    except TimeoutError:
        raise RayAddressError(
            f"Ray address {parsed.text!r} does not answer: no TCP connection to "
            f"{parsed.host}:{parsed.port} within {timeout:g} s"
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RayAddressError(
            f"Ray address {parsed.text!r} does not answer: {reason} ({parsed.host}:{parsed.port})"
        ) from None
    return parsed


def keep_local_ray_on_loopback() -> None:
    """Make a Ray started by this process listen on 127.0.0.1 only.

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when it is first imported; set it, and
    update the constant Ray already read if ``ray`` was imported before (there is no public
    switch). Processes Ray spawns inherit the variable.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def start_local_ray(
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    temp_dir: str | None = None,
    include_dashboard: bool = False,
    **init_kwargs: Any,
):
    """Start a new Ray on this machine, on 127.0.0.1, whatever addresses were left behind.

    ``address="local"`` makes ``ray.init`` ignore ``RAY_ADDRESS`` and the address file of an
    earlier ``ray start``. Stop it with ``ray.shutdown()``.

    Args:
        num_cpus: CPUs Ray may schedule on (default: all).
        num_gpus: GPUs Ray may schedule on (default: all it detects).
        temp_dir: Ray's session directory root (``_temp_dir``); keep it short, since Ray puts
            unix sockets under it (107-byte limit).
        include_dashboard: start the dashboard (on 127.0.0.1).
        **init_kwargs: more ``ray.init`` arguments (``log_to_driver``, ``configure_logging``...).

    Returns:
        ``ray.init``'s context.
    """
    keep_local_ray_on_loopback()
    import ray

    kwargs: dict[str, Any] = {
        "address": "local",
        "_node_ip_address": "127.0.0.1",
        "include_dashboard": include_dashboard,
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        **init_kwargs,
    }
    if include_dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    if temp_dir is not None:
        kwargs["_temp_dir"] = temp_dir
    return ray.init(**kwargs)


def connect_ray(address: str, *, timeout: float = DEFAULT_PROBE_TIMEOUT, **init_kwargs: Any):
    """Connect this process as a driver to the cluster at ``address``, failing within seconds.

    Probes the address first (:func:`probe_address`), then ``ray.init(address=...)``; errors
    from ``ray.init`` (an address that answers but is not a Ray head, a token that the cluster
    rejects) become one-line :class:`RayAddressError` too.

    Returns:
        ``ray.init``'s context.
    """
    parsed = probe_address(address, timeout)
    target = parsed.for_ray_init
    import ray
    from ray.exceptions import AuthenticationError

    try:
        return ray.init(address=target, **init_kwargs)
    except (AuthenticationError, ConnectionError, RuntimeError, ValueError) as error:
        # A cluster with token authentication (Ray's default since 2.5x) refuses a driver
        # without its token after ~20 s of retries, as ConnectionError("Failed to connect to
        # Ray cluster at ...") caused by an AuthenticationError: name the real reason.
        if _refused_token(error):
            raise RayAddressError(
                f"Ray at {target!r} refused this client's authentication token: set "
                "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token, "
                "~/.ray/auth_token on its head"
            ) from None
        reason = " ".join(str(error).split())[:300]
        raise RayAddressError(f"cannot connect to Ray at {target!r}: {reason}") from None


def _refused_token(error: BaseException) -> bool:
    """Whether ``error`` comes from a cluster that rejected this client's token.

    Ray 2.60's ``ray.init`` raises ``ConnectionError`` from a ``RuntimeError`` whose message
    holds the formatted traceback of the ``AuthenticationError`` (not the exception itself),
    so the chain is searched for the type and for the gRPC status text.
    """
    from ray.exceptions import AuthenticationError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, AuthenticationError) or "InvalidAuthToken" in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def ray_session(
    address: str | None, *, local_kwargs: dict[str, Any] | None = None, **init_kwargs: Any
) -> Iterator[None]:
    """Ray for the length of the block: the cluster ``address`` (or ``RAY_ADDRESS``) names,
    reached within seconds or not at all, else a new local Ray on 127.0.0.1, whatever an
    earlier ``ray start`` left behind. A Ray this process already runs (a notebook, a Ray job's
    driver) is used as it is and left running. ``local_kwargs`` are more arguments for
    :func:`start_local_ray` only (``include_dashboard``, ``num_cpus``: what a driver may not
    pass when it joins a cluster); ``init_kwargs`` go to ``ray.init`` either way.

    Raises:
        RayAddressError: the address is malformed or does not answer.
    """
    address = requested_address(address)
    if not address:
        keep_local_ray_on_loopback()
    import ray

    if ray.is_initialized():
        yield
        return
    # ray.init installs a SIGTERM handler of its own that aborts the driver; keep the one the
    # process had (``nas`` stops on SIGTERM as on Ctrl-C, saving what it has done).
    on_sigterm = signal.getsignal(signal.SIGTERM)
    settings = {"log_to_driver": True, **init_kwargs}
    if address:
        connect_ray(address, **settings)
    else:
        start_local_ray(configure_logging=False, **settings, **(local_kwargs or {}))
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        ray.shutdown()
