"""Local means local; an address that does not answer fails within seconds with one line."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nas.cluster import (
    RayAddress,
    RayAddressError,
    connect_ray,
    parse_address,
    probe_address,
    requested_address,
    start_local_ray,
)


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening) while the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def _silent_port() -> Iterator[int]:
    """A loopback port that drops new connections: a listener whose accept queue is full.

    Linux drops a SYN when the accept queue of the listener is full, so the next connect hangs
    until its timeout, like a host behind a firewall that drops packets.
    """
    with socket.socket() as server, contextlib.ExitStack() as clients:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        for _ in range(16):  # fill the queue: stop at the first connect that times out
            client = clients.enter_context(socket.socket())
            client.settimeout(0.5)
            try:
                client.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.fail("could not fill the listener's accept queue")
        yield port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5:6379", RayAddress("10.0.0.5:6379", "", "10.0.0.5", 6379)),
        (" head:6379 ", RayAddress("head:6379", "", "head", 6379)),
        ("ray://head:10001", RayAddress("ray://head:10001", "ray", "head", 10001)),
        ("http://127.0.0.1:8265", RayAddress("http://127.0.0.1:8265", "http", "127.0.0.1", 8265)),
        ("[::1]:6379", RayAddress("[::1]:6379", "", "::1", 6379)),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["head", "head:port", "ftp://head:21", "http://head", ":6379"])
def test_malformed_addresses_name_the_address(text):
    with pytest.raises(RayAddressError, match="is not host:port, ray://host:port or http"):
        parse_address(text)


def test_a_job_server_address_is_not_a_driver_address():
    with pytest.raises(RayAddressError, match="is a job server"):
        _ = parse_address("http://127.0.0.1:8265").for_ray_init


def test_requested_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert requested_address(None) is None
    assert requested_address("local") is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert requested_address(None) == "10.0.0.5:6379"
    assert requested_address("head:6379") == "head:6379"  # --address wins over RAY_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "")
    assert requested_address(None) is None


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "http://127.0.0.1:{port}"])
def test_a_refused_address_fails_at_once(form):
    with _closed_port() as port:
        address = form.format(port=port)
        with pytest.raises(RayAddressError) as caught:
            probe_address(address, timeout=30)
    assert str(caught.value) == (
        f"Ray address {address!r} does not answer: Connection refused (127.0.0.1:{port})"
    )


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "http://127.0.0.1:{port}"])
def test_a_silent_address_fails_after_the_timeout(form):
    with _silent_port() as port:
        address = form.format(port=port)
        with pytest.raises(RayAddressError) as caught:
            probe_address(address, timeout=1)
    assert str(caught.value) == (
        f"Ray address {address!r} does not answer: no TCP connection to 127.0.0.1:{port} within 1 s"
    )


def test_an_unknown_host_is_named():
    with pytest.raises(RayAddressError, match=r"host 'no-such-host\.invalid' does not resolve"):
        probe_address("no-such-host.invalid:6379", timeout=5)


def test_an_answering_address_passes_the_probe():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        assert probe_address(f"127.0.0.1:{port}").port == port


def test_connect_ray_to_a_dead_address_is_one_line_and_never_calls_ray_init():
    import ray

    with _closed_port() as port, pytest.raises(RayAddressError, match="does not answer"):
        connect_ray(f"127.0.0.1:{port}", timeout=2)
    assert not ray.is_initialized()


@pytest.mark.slow
def test_local_ray_ignores_a_dead_address_left_behind(monkeypatch):
    """A dead head's address in ray_current_cluster and in RAY_ADDRESS: a new Ray starts anyway.

    ``ray start --head`` writes ``<RAY_TMPDIR>/ray/ray_current_cluster``; a head that died
    without ``ray stop`` leaves it there. RAY_TMPDIR points at a private directory, so the
    address file of a Ray that someone else runs on this machine is neither read nor written.
    """
    import ray
    from ray._private import services

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this test process")
    tmp = Path(tempfile.mkdtemp(prefix="efr-", dir="/tmp"))  # short: Ray's sockets live below
    monkeypatch.setenv("RAY_TMPDIR", str(tmp))
    with _closed_port() as dead:
        (tmp / "ray").mkdir()
        (tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{dead}")
        # What a plain ray.init() would do: join the dead address (and retry it for minutes).
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        assert services.canonicalize_bootstrap_address(None) == f"127.0.0.1:{dead}"
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{dead}")
        try:
            context = start_local_ray(num_cpus=1, log_to_driver=False)
            gcs = ray.get_runtime_context().gcs_address
            node_ip = ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote())
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)
    assert gcs.startswith("127.0.0.1:") and gcs != f"127.0.0.1:{dead}"
    assert context.address_info["node_ip_address"] == node_ip == "127.0.0.1"
    assert Path(context.address_info["session_dir"]).is_relative_to(tmp)  # its own temp dir
