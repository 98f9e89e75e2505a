"""``nas search`` on a real PostgreSQL study (the server fixture of ``tests/infra/pg_server.py``).

A search with the password in its ``--storage`` URL, and then ``nas front``, ``nas report`` and
``nas dashboard`` on that study with the password from a password file, the URL and
``PGPASSWORD``; the password in none of their outputs, none of the files under the run directory
(Tune's pickled experiment included) or Ray's session logs, and none of the study's stored
attributes. A driver killed mid-search and resumed with the password from ``PGPASSWORD`` (no
trial lost or counted twice). Two drivers searching one study at once (``--join``). A wrong
password, a host that does not answer and a missing database: one line, exit 2, nothing made.

The evaluation is the stand-in of :mod:`tests.nas.search.barrier_driver` (no training), so the
searches take seconds; the server is started once for the session (~6 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import optuna
import pytest
import yaml

from nas.cli import main
from nas.search import SearchConfig
from nas.search.driver import StudyStorage, driver_id
from nas.search.study import prepare_study
from results import DEFAULT_OBJECTIVES, load_study_frame, pareto_front, reward_best
from results.storage import hide_password, split_password
from tests import REPO
from tests.infra.pg_server import PostgresServer, postgres_fixture  # noqa: F401 (fixture)
from tests.nas.search.helpers import (
    SMALL_SPACE,
    assert_nothing_lost_or_counted_twice,
    barrier_driver,
    kill_session,
    study_trials,
    wait_for,
    write_config,
)
from tests.results.dashboard_helpers import dashboard, study_detail

optuna.logging.set_verbosity(optuna.logging.WARNING)


def secret_forms(password: str) -> list[bytes]:
    """The password as it may be written: as is, and percent-encoded in the ways URLs do."""
    forms = {password, quote(password, safe=""), quote(password), quote_plus(password)}
    return sorted(form.encode() for form in forms)


def files_holding(root: Path, secrets: list[bytes]) -> list[str]:
    """Every file under ``root`` whose bytes hold one of ``secrets``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {secret!r}" for secret in secrets if secret in data]
    return found


def stored_text(study: optuna.Study) -> str:
    """Everything the storage holds about a study: its and its trials' attributes, as text."""
    storage, study_id = study._storage, study._study_id
    parts = [study.user_attrs, storage.get_study_system_attrs(study_id)]
    for trial in study.get_trials(deepcopy=False):
        parts += [trial.user_attrs, trial.system_attrs, trial.params]
    return json.dumps(parts, default=str)


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A short folder for the drivers' Ray temp dirs (Ray puts unix sockets under them, and
    their paths may not exceed 107 bytes), removed after the test."""
    folder = Path(tempfile.mkdtemp(prefix="efpg-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def driver_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A driver's environment: Ray temp dir ``tmp``, no password from anywhere but ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(RAY_TMPDIR=str(tmp), PGPASSFILE="/nonexistent", **extra)
    return env


def search_config(tmp: Path, study: str, **overrides) -> Path:
    settings = {"dataset": "synthetic", "trials": 4, "concurrent": 2, "epochs": 1,
                "space": SMALL_SPACE, "study": study, "sampler": "random", **overrides}  # fmt: skip
    return write_config(tmp, **settings)


@dataclass
class Searched:
    """The search of :func:`searched` and what it left behind."""

    config: SearchConfig
    url: str  # with the password
    bare: str  # without it
    output: str  # both drivers' stdout and stderr
    ray_tmp: Path  # both drivers' Ray session directories
    secrets: list[bytes]
    finished_before: list  # the trials that had ended when the first driver was killed


@pytest.fixture(scope="module")
def searched(postgres: PostgresServer, tmp_path_factory) -> Iterator[Searched]:
    """A 6-trial search started with the password in its ``--storage`` URL, killed by SIGKILL
    after 2 trials ended (2 more wait on the barrier), and resumed with the URL without the
    password and the password in ``PGPASSWORD``."""
    tmp = tmp_path_factory.mktemp("pg-search")
    path = search_config(tmp, "pg-search", trials=6)
    url, bare = postgres.url(driver="postgresql"), postgres.url(with_password=False)
    config = SearchConfig.load(path).replace(storage=bare)
    barrier = tmp / "barrier"
    # Short: Ray puts unix sockets under it (107-byte limit).
    ray_tmp = Path(tempfile.mkdtemp(prefix="efpg-", dir="/tmp"))
    try:
        first = subprocess.Popen(
            barrier_driver(path, barrier, 2, "--storage", url), cwd=REPO,
            env=driver_env(ray_tmp / "1"), start_new_session=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            # Two candidates finish and are told; the next two wait on the barrier for ever.
            wait_for(lambda: len(list(barrier.glob("blocked-*"))) == 2, 300, "2 blocked", first)
            wait_for(
                lambda: sum(t.state.is_finished() for t in study_trials(config, url)) == 2,
                60, "2 finished trials", first,
            )  # fmt: skip
        finally:
            kill_session(first)
        finished_before = [t for t in study_trials(config, url) if t.state.is_finished()]
        resumed = subprocess.run(
            barrier_driver(path, barrier, 100, "--resume", "--storage", bare), cwd=REPO,
            env=driver_env(ray_tmp / "2", PGPASSWORD=postgres.password), capture_output=True,
            text=True, timeout=600, start_new_session=True,
        )  # fmt: skip
        output = first.stdout.read() + resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, output[-3000:]
        yield Searched(
            config, url, bare, output, ray_tmp, secret_forms(postgres.password), finished_before
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_killed_driver_resumes_with_the_password_from_pgpassword(searched):
    assert len(searched.finished_before) == 2
    trials = study_trials(searched.config, searched.url)
    assert_nothing_lost_or_counted_twice(trials, searched.finished_before, 6, searched.output)
    assert all(t.user_attrs["node"] for t in trials if t.state.name == "COMPLETE")


@pytest.mark.slow
def test_the_password_is_in_no_output_file_log_or_stored_attribute(searched):
    starts = [line for line in searched.output.splitlines() if line.startswith("nas search: ")]
    # The first driver had the password in its URL, the resumed one in PGPASSWORD.
    assert starts[0].endswith(f"storage {split_password(searched.url)[0]}")
    assert starts[1].endswith(f"storage {searched.bare}")
    assert len(starts) == 2
    run_dir = searched.config.run_dir
    assert (run_dir / "best.yaml").is_file() and list((run_dir / "tune").rglob("*.pkl"))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    study = optuna.load_study(study_name="pg-search", storage=searched.url)
    stored = yaml.safe_load(study.user_attrs["config"])
    assert saved["storage"] == stored["storage"] == split_password(searched.url)[0]

    for secret in searched.secrets:
        assert secret.decode() not in searched.output
        assert secret.decode() not in stored_text(study)
    assert len(list(searched.ray_tmp.rglob("session_*"))) >= 2  # both drivers' Ray sessions
    assert list(searched.ray_tmp.rglob("*.log"))
    for root in (run_dir, searched.ray_tmp):
        assert files_holding(root, searched.secrets) == []


def test_what_the_searcher_hands_to_tune_holds_no_password(postgres):
    url = postgres.url()
    opener = StudyStorage(url)
    blob = pickle.dumps(opener)
    assert not [s for s in secret_forms(postgres.password) if s in blob]
    assert opener.url == postgres.url(with_password=False)
    # In this process the password is still at hand: the unpickled opener connects.
    storage = pickle.loads(blob)()
    assert isinstance(storage.get_all_studies(), list)


@pytest.mark.slow
def test_front_report_and_dashboard_read_the_postgres_study(
    searched, postgres, tmp_path, monkeypatch, capsys
):
    secrets = [secret.decode() for secret in searched.secrets]
    # nas front: the password from a password file (libpq's format, mode 0600).
    passfile = tmp_path / "pgpass"
    escaped = postgres.password.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"127.0.0.1:{postgres.port}:*:{postgres.user}:{escaped}\n")
    passfile.chmod(0o600)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    assert main(["front", searched.bare, "--study", "pg-search"]) == 0
    front = capsys.readouterr()
    frame = load_study_frame(searched.url, "pg-search")
    complete = frame[frame["state"] == "COMPLETE"]
    assert len(complete) == 6
    assert "study pg-search (reward mode, " in front.out
    listed = [int(n) for n in re.findall(r"^\s*#(\d+)\s", front.out, flags=re.MULTILINE)]
    assert listed == list(pareto_front(frame, DEFAULT_OBJECTIVES)["number"])

    # nas report: the password in the URL.
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    out = tmp_path / "report.html"
    assert main(["report", searched.url, "--study", "pg-search", "--out", str(out)]) == 0
    report = capsys.readouterr()
    html = out.read_text()
    assert 'id="front-pg-search"' in html and hide_password(searched.url) in html

    # nas dashboard: the password from PGPASSWORD.
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    log = tmp_path / "dashboard.log"
    with dashboard(searched.bare, "--study", "pg-search", log=log) as base:
        detail = study_detail(base, "pg-search")
    assert len(detail["trials"]) == len(frame)
    best = reward_best(frame)
    assert f"trial {best['number']}" in detail["note"]["body"]

    shown = front.out + front.err + report.out + report.err + html + log.read_text()
    assert [secret for secret in secrets if secret in shown] == []
    assert files_holding(tmp_path, searched.secrets) == []


def tune_numbers(run_dir: Path) -> list[int]:
    """The study's trial numbers that a driver's Tune experiment ran (each trial's params)."""
    return [json.loads(p.read_text())["number"] for p in (run_dir / "tune").glob("*/params.json")]


@pytest.mark.slow
def test_two_drivers_search_one_study_at_once_losing_and_repeating_nothing(
    postgres, tmp_path, ray_tmp
):
    """Two drivers start together on a new study (one creates it, the other joins), each runs
    its own trials one at a time, and each one's first candidate waits until the other's has
    started (``--meet=2``): they are searching the study at the same time."""
    url = postgres.url()
    barrier = tmp_path / "barrier"
    drivers, trials = [], {"a": 3, "b": 2}
    for name, count in trials.items():
        path = search_config(tmp_path / name, "pg-joined", trials=count, concurrent=1)
        command = barrier_driver(
            path, barrier, 100, "--storage", url, "--join", options=["--meet=2"]
        )
        process = subprocess.Popen(
            command, cwd=REPO, env=driver_env(ray_tmp / name), start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        drivers.append(process)
    outputs = []
    try:
        for process in drivers:
            outputs.append(process.communicate(timeout=600)[0])
    finally:
        for process in drivers:
            kill_session(process)
    for process, output in zip(drivers, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name="pg-joined", storage=url)
    stored = study.get_trials()
    assert sorted(t.number for t in stored) == list(range(5))
    assert all(t.state.name == "COMPLETE" for t in stored)
    run_dirs = {name: (tmp_path / name / "runs" / "pg-joined").resolve() for name in trials}
    by_driver = {name: [t.number for t in stored if t.user_attrs["driver"] == driver_id(run_dir)]
                 for name, run_dir in run_dirs.items()}  # fmt: skip
    ran = {name: tune_numbers(run_dir) for name, run_dir in run_dirs.items()}
    for name, count in trials.items():
        assert len(by_driver[name]) == count  # each driver ran its own number of trials
        assert sorted(ran[name]) == sorted(by_driver[name])  # and told each one once
    assert set(ran["a"]).isdisjoint(ran["b"])
    starts = [json.loads(p.read_text()) for p in barrier.glob("started-*.json")]
    assert len({start["pid"] for start in starts}) >= 2  # the two met: both were running


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"password": "not-the-password"}, 'password authentication failed for user "effnas"'),
        ({"port": "closed"}, "Connection refused"),
        ({"database": "no_such_db"}, 'database "no_such_db" does not exist'),
    ],
)
def test_a_storage_that_cannot_be_opened_is_one_line_and_exit_2(
    postgres, tmp_path, capsys, monkeypatch, change, reason
):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    url = postgres.url(
        driver="postgresql", password=change.get("password"), database=change.get("database")
    )
    if change.get("port") == "closed":
        url = url.replace(f":{postgres.port}/", f":{_closed_port()}/")
    path = search_config(tmp_path, "pg-refused")
    assert main(["search", str(path), "--storage", url]) == 2
    captured = capsys.readouterr()
    shown = split_password(url)[0]  # the URL as the search saves it
    assert captured.err == f"nas search: error: storage {shown} cannot be opened: {reason}\n"
    assert postgres.password not in captured.out + captured.err
    assert "not-the-password" not in captured.err
    assert not (tmp_path / "runs").exists()


def test_join_needs_a_database_server(tmp_path, capsys):
    path = search_config(tmp_path, "sqlite-join")
    assert main(["search", str(path), "--join"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--join needs the study on a database server" in err
    assert not (tmp_path / "runs").exists()


def test_joining_a_study_that_scores_otherwise_is_refused(postgres, tmp_path, capsys):
    url = postgres.url()
    first = search_config(tmp_path / "a", "pg-scoring", epochs=1)
    other = search_config(tmp_path / "b", "pg-scoring", epochs=2)
    bare = postgres.url(with_password=False)
    prepare_study(StudyStorage(url)(), SearchConfig.load(first).replace(storage=bare))
    assert main(["search", str(other), "--storage", url, "--join"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "nas search: error: study 'pg-scoring' scores candidates with epochs 1, this config has "
        "2; its trials would not compare: use the same epochs or another --study\n"
    )
    assert len(optuna.load_study(study_name="pg-scoring", storage=url).get_trials()) == 0


_OPEN = """
import sys
from results.storage import open_storage
open_storage(sys.argv[1], writable=True)
print("opened")
"""


def test_writers_take_turns_creating_optunas_tables(postgres):
    """Two processes open a new, empty Optuna storage at once (a schema of its own) while the
    test holds the schema lock: both wait on it (PostgreSQL lists their lock requests) before
    any table exists; released, both open it. Without the lock one of them would often fail
    with an IntegrityError (tests/infra/README.md)."""
    import psycopg
    import sqlalchemy

    from results.storage import SCHEMA_LOCK, advisory_lock, storage_engine_kwargs

    schema = "fresh_" + secrets.token_hex(4)
    with psycopg.connect(postgres.url(driver="postgresql"), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = postgres.url() + f"?options=-csearch_path%3D{schema}"

    # PostgreSQL shows a bigint advisory key as its high and low 32 bits (classid, objid).
    key = int.from_bytes(hashlib.sha256(SCHEMA_LOCK.encode()).digest()[:8], "big")

    def waiting() -> int:
        """Sessions waiting for the schema lock."""
        query = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                 "AND classid::bigint = %s AND objid::bigint = %s")  # fmt: skip
        with psycopg.connect(postgres.url(driver="postgresql")) as conn:
            return conn.execute(query, (key >> 32, key & 0xFFFFFFFF)).fetchone()[0]

    def tables() -> int:
        with psycopg.connect(postgres.url(driver="postgresql")) as conn:
            query = "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s"
            return conn.execute(query, (schema,)).fetchone()[0]

    engine = sqlalchemy.create_engine(url, **storage_engine_kwargs(url))
    writers: list[subprocess.Popen] = []
    try:
        with engine.connect() as connection, advisory_lock(connection, SCHEMA_LOCK):
            argv = [sys.executable, "-c", _OPEN, url]
            for _ in range(2):
                writer = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
                writers.append(writer)
            deadline = time.monotonic() + 120
            while waiting() < 2:
                assert all(w.poll() is None for w in writers), [w.communicate() for w in writers]
                assert time.monotonic() < deadline, "the writers never waited on the lock"
                time.sleep(0.1)
            assert tables() == 0
        results = [writer.communicate(timeout=120) for writer in writers]
    finally:
        engine.dispose()
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
    assert [writer.returncode for writer in writers] == [0, 0], results
    assert [out for out, _ in results] == ["opened\n", "opened\n"]
    assert tables() > 0
    storage = optuna.storages.RDBStorage(url)
    assert storage.get_all_studies() == []
