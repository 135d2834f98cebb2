"""DATABASE_URL as hosts hand it out; failures say which part is wrong. Real PostgreSQL."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from app.store import Store, StoreError
from app.store.db import describe_failure, engine_url
from tests.store.pg import ADMIN_URL, pg_url  # noqa: F401 - fixture

pytestmark = pytest.mark.postgres
HOST = ADMIN_URL.split("@", 1)[1].split("/", 1)[0]  # 127.0.0.1:5432


def test_libpq_parameters_become_asyncpg_ones():
    assert engine_url("postgres://u:p@h:5432/db?sslmode=disable") == (
        "postgresql+asyncpg://u:p@h:5432/db?ssl=disable"
    )
    assert engine_url("postgresql://u@h/db?sslmode=require&connect_timeout=5") == (
        "postgresql+asyncpg://u@h/db?ssl=require&timeout=5"
    )
    with pytest.raises(StoreError, match="sslmode must be one of"):
        engine_url("postgres://u@h/db?sslmode=maybe")
    with pytest.raises(StoreError, match="unsupported parameter 'frobnicate'"):
        engine_url("postgres://u@h/db?frobnicate=1")


async def test_a_fly_style_url_opens(pg_url):  # noqa: F811
    fly_style = pg_url.replace("postgresql://", "postgres://") + "?sslmode=disable"
    store = await Store.open(fly_style)
    try:
        assert store.db.dialect == "postgresql"
    finally:
        await store.close()


async def test_a_missing_database_is_named():
    url = f"postgres://postgres@{HOST}/no_such_db_here?sslmode=disable"
    with pytest.raises(StoreError, match=f"database 'no_such_db_here' does not exist at {HOST}"):
        await Store.open(url)


async def test_an_unknown_user_is_named():
    url = f"postgres://nobody_here:pw@{HOST}/test"
    with pytest.raises(StoreError, match=f"user 'nobody_here' is not known at {HOST}"):
        await Store.open(url)


async def test_nothing_listening_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgres://postgres:secret-pw@127.0.0.1:{port}/test"
    with pytest.raises(StoreError) as err:
        await Store.open(url)
    assert f"nothing is listening at 127.0.0.1:{port}" in str(err.value)
    assert "secret-pw" not in str(err.value)


def test_a_refused_password_is_named():
    # The local server trusts loopback, so the driver's own error stands in for the refusal.
    exc = asyncpg.InvalidPasswordError('password authentication failed for user "app"')
    assert describe_failure(exc, "postgres://app:pw@db.internal:5433/calls") == (
        "password refused for user 'app' at db.internal:5433"
    )
