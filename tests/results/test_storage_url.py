"""Storage URL helpers: PostgreSQL URLs go through psycopg 3, passwords never come back out."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from results.errors import ResultsError
from results.storage import (
    SQLITE_TIMEOUT_S,
    describe_storage_error,
    hide_password,
    normalize_storage_url,
    split_password,
    storage_engine_kwargs,
)

SECRET = "p@ss:w/rd%"
URL = "postgresql://effnas:p%40ss%3Aw%2Frd%25@db.example:5433/studies"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgres_schemes_map_to_psycopg3(scheme):
    url = normalize_storage_url(URL.replace("postgresql", scheme, 1))
    assert url == URL.replace("postgresql", "postgresql+psycopg", 1)
    parsed = make_url(url)
    assert parsed.get_dialect().driver == "psycopg"
    assert parsed.password == SECRET  # percent-decoding survives the round trip


def test_other_urls_are_left_alone():
    assert normalize_storage_url("sqlite:///runs/x/study.db") == "sqlite:///runs/x/study.db"


def test_psycopg2_url_without_psycopg2_names_the_fix_not_the_password():
    pytest.importorskip("psycopg")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("psycopg2 is installed here")
    with pytest.raises(ResultsError) as caught:
        normalize_storage_url(URL.replace("postgresql", "postgresql+psycopg2", 1))
    message = str(caught.value)
    assert "psycopg2, which is not installed" in message
    assert SECRET not in message and "p%40ss" not in message


def test_hide_password():
    assert hide_password(URL) == "postgresql://effnas:***@db.example:5433/studies"
    assert hide_password("sqlite:///a.db") == "sqlite:///a.db"
    # Not a URL SQLAlchemy parses: whatever sits before the last @ is hidden all the same.
    assert hide_password("postgresql://u:se cret@host:notaport/db") == (
        "postgresql://***@host:notaport/db"
    )


def test_split_password():
    bare, password = split_password(URL)
    assert bare == "postgresql://effnas@db.example:5433/studies"
    assert password == SECRET
    assert split_password(bare) == (bare, None)
    assert split_password("sqlite:///a.db") == ("sqlite:///a.db", None)


def test_engine_kwargs_bound_the_connect_time_and_hold_no_password():
    assert storage_engine_kwargs(URL, 7) == {"connect_args": {"connect_timeout": 7}}
    assert storage_engine_kwargs(URL + "?connect_timeout=3") == {}
    sqlite = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    assert storage_engine_kwargs("sqlite:///a.db") == sqlite


def test_unparsable_url_is_one_line_without_the_password():
    with pytest.raises(ResultsError) as caught:
        split_password("postgresql://u:secret@host:notaport/db")
    assert "secret" not in str(caught.value)
    assert "postgresql://***@host:notaport/db" in str(caught.value)


def test_describe_storage_error_keeps_the_reason_and_drops_the_password():
    class Orig(Exception):
        pass

    class Wrapped(Exception):
        orig = Orig(
            'connection failed: connection to server at "10.0.0.5", port 5433 failed: '
            f'FATAL:  password authentication failed for user "{SECRET}"\n'
        )

    line = describe_storage_error(Wrapped("(psycopg.OperationalError) ..."), URL)
    assert line == (
        "storage postgresql://effnas:***@db.example:5433/studies cannot be opened: "
        'password authentication failed for user "***"'
    )
