"""A throw-away PostgreSQL database per test, on the server ``make test`` ensures is up."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator

import asyncpg
import pytest

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _admin(sql: str) -> None:
    """Run one statement on the admin database, on a loop of its own (fixtures may be set up
    while the test's loop is running)."""

    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"va_test_{secrets.token_hex(6)}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
