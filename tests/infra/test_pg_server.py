"""A real PostgreSQL server: the test fixture itself, Optuna's RDB storage on it, and its errors.

What the search driver needs to know, proven on a server these tests start (``postgres``
fixture, ``conftest.py``): SQLAlchemy + psycopg 3 reach it through ``postgresql+psycopg://``;
two processes writing one study lose and duplicate no trial; a wrong password, a missing
database, a closed port, a silent server and a missing password each fail within seconds with a
one-line reason that holds no password; a URL stored without its password connects through
``PGPASSWORD`` or a password file; a pickled storage (as Ray Tune pickles its searcher) holds
the password exactly when the URL does.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import optuna
import psycopg
import pytest
import sqlalchemy.exc

from results.storage import describe_storage_error, split_password, storage_engine_kwargs
from tests import REPO
from tests.infra.pg_server import PostgresServer, postgres_fixture, running_postgres  # noqa: F401 (fixture)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _connect(server: PostgresServer, **overrides) -> psycopg.Connection:
    params = {
        "host": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "dbname": server.database,
        "connect_timeout": 10,
        **overrides,
    }
    return psycopg.connect(**params)


def test_server_listens_on_loopback_and_requires_a_password(postgres):
    with _connect(postgres) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("listen_addresses", "password_encryption")
        }
        is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert is_super.fetchone()[0] is False
    assert settings["listen_addresses"] == "127.0.0.1"
    assert (postgres.root / f".s.PGSQL.{postgres.port}").is_socket()  # not /var/run/postgresql
    assert settings["password_encryption"] == "scram-sha-256"
    # No trust or peer rule lets anyone in without the password, over TCP or the socket.
    for host in ("127.0.0.1", str(postgres.root)):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            _connect(postgres, host=host, password="wrong")


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (an exited one may linger as a zombie until reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_server_stops_and_leaves_nothing_when_the_body_fails():
    with pytest.raises(RuntimeError, match="body failed"), running_postgres() as server:
        root = server.root
        pid = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
        assert _running(pid)
        raise RuntimeError("body failed")
    assert not root.exists()
    assert not _running(pid)  # pg_ctl stop -w waited for the postmaster to exit
    assert not server.is_running()


_AS_USER = """
import sys
import time
sys.path.insert(0, {repo!r})
from tests.infra.pg_server import running_postgres
import psycopg
with running_postgres() as server:
    with psycopg.connect(host="127.0.0.1", port=server.port, user=server.user,
                         password=server.password, dbname=server.database) as conn:
        print(conn.execute("SELECT current_user").fetchone()[0])
"""


def test_server_starts_for_an_unprivileged_user_too():
    """As root, run the helper as ``nobody`` (the path a developer's own account takes)."""
    argv = [sys.executable, "-c", _AS_USER.format(repo=str(REPO))]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *argv]
    env = {**os.environ, "HOME": "/tmp"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["effnas"]


# ---------------------------------------------------------------------------------------------
# Optuna's distributed mode: two processes, one study


def _optimize(url: str, study: str, worker: int, n_trials: int, barrier, results) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    barrier.wait(timeout=120)  # both create the study at once: one creates, the other loads
    study_ = optuna.create_study(
        study_name=study,
        storage=url,
        load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=worker),
    )
    seen = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10.0, 10.0)
        trial.set_user_attr("worker", worker)
        seen.append((trial.number, x))
        return (x - 2.0) ** 2

    study_.optimize(objective, n_trials=n_trials)
    results.put((worker, seen))


def _collect(results, processes, deadline_s: float = 240.0) -> dict:
    """Each worker's report; fails at once when a worker died instead of waiting them out."""
    reports: dict = {}
    deadline = time.monotonic() + deadline_s
    while len(reports) < len(processes):
        try:
            worker, seen = results.get(timeout=1.0)
            reports[worker] = seen
        except queue.Empty:
            crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            assert not crashed, f"a worker failed with exit code {crashed}"
            assert time.monotonic() < deadline, "workers did not finish"
    return reports


def test_two_processes_write_one_study_without_losing_or_duplicating_a_trial(postgres):
    n_trials, study = 15, "two-writers"
    # Optuna creates its tables (and PostgreSQL enum types) on the first RDBStorage; two
    # processes doing that at once on an empty database race: one fails with IntegrityError
    # 'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'. The search
    # driver opens the storage before a second search can: so does this test.
    optuna.storages.RDBStorage(postgres.url())
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(
            target=_optimize, args=(postgres.url(), study, w, n_trials, barrier, results)
        )
        for w in (0, 1)
    ]
    for process in workers:
        process.start()
    reports = _collect(results, workers)
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0

    trials = optuna.load_study(study_name=study, storage=postgres.url()).get_trials()
    assert sorted(t.number for t in trials) == list(range(2 * n_trials))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    stored = {t.number: (t.user_attrs["worker"], t.params["x"], t.value) for t in trials}
    reported = {number: (w, x) for w, seen in reports.items() for number, x in seen}
    assert len(reported) == sum(len(seen) for seen in reports.values()) == 2 * n_trials
    assert {n: (w, x) for n, (w, x, _) in stored.items()} == reported
    assert all(value == pytest.approx((x - 2.0) ** 2) for _, x, value in stored.values())


# ---------------------------------------------------------------------------------------------
# Connection failures: which exception, what message, how fast


def _open_error(url: str) -> sqlalchemy.exc.OperationalError:
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
        optuna.storages.RDBStorage(url, engine_kwargs=storage_engine_kwargs(url, 2))
    return caught.value


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"password": "not-the-password"}, 'password authentication failed for user "effnas"'),
        ({"user": "nobody_here"}, 'password authentication failed for user "nobody_here"'),
        ({"database": "no_such_db"}, 'database "no_such_db" does not exist'),
        ({"with_password": False}, "fe_sendauth: no password supplied"),
    ],
)
def test_server_refusals_are_one_line_without_the_password(postgres, change, reason, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    url = postgres.url(**change)
    error = _open_error(url)
    assert isinstance(error.orig, psycopg.OperationalError)
    line = describe_storage_error(error, url)
    assert line.endswith(f"cannot be opened: {reason}")
    assert "\n" not in line
    for secret in {postgres.password, change.get("password")} - {None}:
        assert secret not in line


def test_a_closed_port_is_refused_at_once():
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"postgresql+psycopg://u:secret@127.0.0.1:{sock.getsockname()[1]}/db"
        error = _open_error(url)
    assert describe_storage_error(error, url).endswith("cannot be opened: Connection refused")


def test_a_silent_server_times_out_after_connect_timeout():
    """A host that accepts TCP and never answers: without connect_timeout psycopg waits 130 s."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        port = sock.getsockname()[1]
        url = f"postgresql+psycopg://u:secret@127.0.0.1:{port}/db"
        error = _open_error(url)
    assert isinstance(error.orig, psycopg.errors.ConnectionTimeout)
    line = describe_storage_error(error, url)
    assert line == (
        f"storage postgresql+psycopg://u:***@127.0.0.1:{port}/db "
        "cannot be opened: connection timeout expired"
    )


# ---------------------------------------------------------------------------------------------
# A URL without its password: libpq's PGPASSWORD and password file


def test_a_url_without_password_connects_through_pgpassword(postgres, monkeypatch):
    bare, password = split_password(postgres.url())
    assert password == postgres.password
    assert "@127.0.0.1" in bare and postgres.password not in bare
    monkeypatch.setenv("PGPASSWORD", password)
    storage = optuna.storages.RDBStorage(bare, engine_kwargs=storage_engine_kwargs(bare))
    optuna.create_study(study_name="via-env", storage=storage)
    assert "via-env" in [s.study_name for s in optuna.get_all_study_summaries(storage)]


def test_a_url_without_password_connects_through_a_password_file(postgres, monkeypatch, tmp_path):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    escaped = postgres.password.replace("\\", "\\\\").replace(":", "\\:")
    passfile = tmp_path / "pgpass"
    passfile.write_text(
        f"127.0.0.1:{postgres.port}:{postgres.database}:{postgres.user}:{escaped}\n"
    )
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    bare = postgres.url(with_password=False)

    passfile.chmod(0o644)  # libpq ignores a file others can read (a warning on stderr)
    assert "no password supplied" in describe_storage_error(_open_error(bare), bare)

    passfile.chmod(0o600)
    storage = optuna.storages.RDBStorage(bare, engine_kwargs=storage_engine_kwargs(bare))
    assert isinstance(optuna.get_all_study_summaries(storage), list)


def test_a_pickled_storage_holds_the_password_only_if_its_url_does(postgres, monkeypatch):
    encoded = quote(postgres.password, safe="").encode()  # as the URL spells it
    with_password = optuna.storages.RDBStorage(postgres.url())
    assert encoded in pickle.dumps(with_password)

    bare, password = split_password(postgres.url())
    monkeypatch.setenv("PGPASSWORD", password)
    storage = optuna.storages.RDBStorage(bare, engine_kwargs=storage_engine_kwargs(bare))
    blob = pickle.dumps(storage)
    assert password.encode() not in blob and encoded not in blob
    restored = pickle.loads(blob)  # reconnects: the password comes from PGPASSWORD again
    assert isinstance(restored.get_all_studies(), list)
