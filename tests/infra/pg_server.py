"""A throwaway PostgreSQL server for tests: its own data directory, a loopback port, a password.

:class:`PostgresServer` runs ``initdb`` and ``pg_ctl`` from the system's PostgreSQL (Debian's
``postgresql`` package puts them in ``/usr/lib/postgresql/<major>/bin``) on a fresh temporary
directory, listens on 127.0.0.1 only (its unix socket also lives in that directory, never in
``/var/run/postgresql``), requires scram-sha-256 passwords for every connection, creates one
login role that owns one database, and is stopped with ``pg_ctl stop`` on its own data directory.

``initdb`` and ``postgres`` refuse to run as root. As root (CI, this container) the server runs
as the unprivileged ``postgres`` user (or ``nobody`` where that user does not exist) through
``setpriv``, and the temporary directory is handed to that user; as anyone else it runs as the
current user. Nothing outside the temporary directory is written.

Tests use the session fixture ``postgres`` (:func:`postgres_fixture`; import it into the test
module).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.infra.system_tools import missing

__all__ = [
    "INSTALL_HINT",
    "PostgresServer",
    "ServerBinariesMissing",
    "find_server_binaries",
    "postgres_fixture",
    "running_postgres",
]

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install them with "
    "`apt-get install -y postgresql` (Debian/Ubuntu) or put their directory on PATH"
)

# Settings for a disposable test server: durability is not needed, speed and isolation are.
_SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "60",
    "shared_buffers": "32MB",
    "logging_collector": "off",
}


class ServerBinariesMissing(RuntimeError):
    """The PostgreSQL server programs are not installed; the message says how to install them."""


def find_server_binaries() -> Path:
    """The directory that holds ``initdb``, ``pg_ctl`` and ``postgres``.

    Looks on ``PATH`` first, then in Debian's versioned ``/usr/lib/postgresql/<major>/bin``
    (newest major first), since Debian does not put the server programs on ``PATH``.

    Raises:
        ServerBinariesMissing: neither place has all three programs.
    """
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(d) for d in debian), key=lambda d: _major(d), reverse=True)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise ServerBinariesMissing(INSTALL_HINT)


def _major(bindir: Path) -> int:
    name = bindir.parent.name
    return int(name) if name.isdigit() else 0


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class _RunAs:
    """Who runs the server: the current user, or (as root) an unprivileged one."""

    uid: int
    gid: int

    @classmethod
    def choose(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls(os.geteuid(), os.getegid())
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return cls(entry.pw_uid, entry.pw_gid)
        raise ServerBinariesMissing("running as root and neither 'postgres' nor 'nobody' exists")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run as this user (through ``setpriv`` when that is not the current one)."""
        if self.uid == os.geteuid():
            return argv
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--",
            *argv,
        ]


class PostgresServer:
    """A PostgreSQL server in a temporary directory; use :func:`running_postgres` in tests.

    Attributes:
        user: the login role that owns :attr:`database` (not a superuser).
        password: its password (random unless given).
        database: the database that :attr:`user` owns.
        port: the loopback TCP port, known once :meth:`start` returned.
        root: the temporary directory (data directory, socket directory, server log).
    """

    def __init__(
        self,
        *,
        user: str = "effnas",
        password: str | None = None,
        database: str = "effnas",
        bindir: Path | None = None,
    ) -> None:
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(16)
        self.database = database
        self.bindir = bindir if bindir is not None else find_server_binaries()
        self.port: int | None = None
        self.root: Path | None = None
        self._superuser_password = secrets.token_urlsafe(16)
        self._run_as = _RunAs.choose()
        self._started = False

    # -- URLs -----------------------------------------------------------------------------

    def url(
        self,
        *,
        driver: str = "postgresql+psycopg",
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        with_password: bool = True,
    ) -> str:
        """A SQLAlchemy URL for this server; the password is percent-encoded.

        Args:
            driver: the URL's scheme (``postgresql`` alone means psycopg2 to SQLAlchemy).
            user: the role; default :attr:`user`.
            password: the password; default :attr:`password`.
            database: the database; default :attr:`database`.
            with_password: False leaves the password out (for PGPASSFILE / PGPASSWORD).
        """
        user = user or self.user
        password = self.password if password is None else password
        userinfo = quote(user, safe="")
        if with_password:
            userinfo += ":" + quote(password, safe="")
        return f"{driver}://{userinfo}@127.0.0.1:{self.port}/{database or self.database}"

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "server.log"

    # -- life cycle -----------------------------------------------------------------------

    def start(self, attempts: int = 3) -> None:
        """Create the cluster, start the server, create the role and the database.

        The port is picked free just before the start; if another process takes it in between,
        the start is retried on a new port (``attempts`` times in all). On any failure the
        server is stopped and the directory removed before the error propagates.
        """
        self.root = Path(tempfile.mkdtemp(prefix="effnas-pg-"))
        try:
            os.chown(self.root, self._run_as.uid, self._run_as.gid)
            self._initdb()
            for attempt in range(attempts):
                self.port = _free_loopback_port()
                self._write_settings()
                result = self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))
                if result.returncode == 0:
                    self._started = True
                    break
                if attempt == attempts - 1:
                    raise RuntimeError(f"pg_ctl start failed: {self._tail_log()}")
            self._create_role_and_database()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and remove its directory; idempotent."""
        if self.root is None:
            return
        try:
            if self._started or (self.data_dir / "postmaster.pid").exists():
                result = self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
                if result.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
                    # A fast stop that timed out: an immediate stop still ends every backend.
                    self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "60")
        finally:
            self._started = False
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def is_running(self) -> bool:
        """Whether ``pg_ctl status`` finds the server running on this data directory."""
        if self.root is None:
            return False
        return self._pg_ctl("status").returncode == 0

    # -- internals ------------------------------------------------------------------------

    def _run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        # LC_ALL=C: initdb needs a locale that exists on the machine; C always does.
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        return subprocess.run(
            self._run_as.command(argv),
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **kwargs,
        )

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        return self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _initdb(self) -> None:
        assert self.root is not None
        pwfile = self.root / "superuser.pw"
        pwfile.write_text(self._superuser_password + "\n")
        os.chown(pwfile, self._run_as.uid, self._run_as.gid)
        pwfile.chmod(0o600)
        result = self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ]
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def _write_settings(self) -> None:
        # A later line in postgresql.conf wins, so a retry on a new port just appends again.
        settings = {
            **_SERVER_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# effnas test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _create_role_and_database(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=self._superuser_password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.user)
                )
            )

    def _tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return "(no server log)"


@contextlib.contextmanager
def running_postgres(**kwargs) -> Iterator[PostgresServer]:
    """A started :class:`PostgresServer` that is stopped and removed on exit, also on errors."""
    server = PostgresServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="postgres")
def postgres_fixture() -> Iterator[PostgresServer]:
    """Fixture ``postgres``: a :class:`PostgresServer` for the session (import it to use it).

    Role ``effnas`` (a random password with characters that need percent-encoding in a URL)
    owns database ``effnas``; tests that write studies use their own study names. Skipped with
    the install hint where the server programs are missing, failed instead on CI.
    """
    try:
        server = PostgresServer(password="pw:with/odd@chars%" + secrets.token_hex(4))
    except ServerBinariesMissing as error:
        missing(str(error))
    server.start()  # stops and cleans up itself if it fails half-way
    try:
        yield server
    finally:
        server.stop()
