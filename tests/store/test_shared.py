"""What workers share through the database, on SQLite and on PostgreSQL: admission slots,
leases and spent web-call tokens, with several processes' worth of contenders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.store import Store
from app.store.shared import (
    acquire_lease,
    free_slot,
    hold_slots,
    release_lease,
    reserve_slot,
    slots_in_use,
    spend_token,
)
from tests.store.pg import pg_url  # noqa: F401 - fixture

T0 = 1_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Store]]:
    """Two stores on one database: two workers, each with its own engine and pool."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    opened = [await Store.open(url), await Store.open(url)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def test_slots_cap_an_instance_whichever_worker_reserves(stores: list[Store]) -> None:
    a, b = (s.db for s in stores)

    async def reserve(db, call_id: str, instance: str = "m1", now: float = T0) -> bool:
        return await reserve_slot(db, call_id, instance=instance, capacity=3, now=now, ttl_s=30)

    # Eight webhooks at once, spread over two workers: exactly the capacity is admitted.
    results = await asyncio.gather(*(reserve(a if i % 2 else b, f"CA{i}") for i in range(8)))
    assert sum(results) == 3
    admitted = [f"CA{i}" for i, ok in enumerate(results) if ok]
    assert await reserve(b, admitted[0])  # a retried webhook keeps its slot, on any worker
    assert await slots_in_use(a, "m1", T0) == 3
    assert await reserve(a, "CA-other-machine", instance="m2")  # another machine's pool

    # The call's stream runs on worker b of machine m2: the slot moves there with its holder.
    await hold_slots(b, [admitted[0]], instance="m2", holder="m2:42", expires_at=T0 + 30)
    assert await slots_in_use(a, "m1", T0) == 2
    assert await reserve(a, "CA-next")  # m1 has room again
    assert not await reserve(b, "CA-full")

    # A call that ends frees its slot at once; one whose worker died frees it on expiry.
    await free_slot(a, "CA-next")
    assert await reserve(b, "CA-after-free")
    assert not await reserve(a, "CA-too-many", now=T0 + 29)
    assert await reserve(a, "CA-after-expiry", now=T0 + 31)


async def test_a_lease_has_one_holder_until_released_or_expired(stores: list[Store]) -> None:
    a, b = (s.db for s in stores)

    async def take(db, holder: str, now: float) -> bool:
        return await acquire_lease(db, "dialler", holder=holder, now=now, ttl_s=15)

    first = await asyncio.gather(*(take(a if i % 2 else b, f"w{i}", T0) for i in range(6)))
    assert sum(first) == 1
    owner = f"w{first.index(True)}"
    other = "w9"
    assert await take(b, owner, T0 + 10)  # renewed by its holder
    assert not await take(a, other, T0 + 20)  # still held: renewed at +10 for 15 s
    assert await take(a, other, T0 + 26)  # the holder stopped renewing: taken over
    assert not await take(b, owner, T0 + 27)
    await release_lease(b, "dialler", holder=owner)  # not the holder: changes nothing
    assert not await take(b, owner, T0 + 28)
    await release_lease(a, "dialler", holder=other)
    assert await take(b, owner, T0 + 28)  # released: taken at once


async def test_a_web_token_is_spent_once_across_workers(stores: list[Store]) -> None:
    a, b = (s.db for s in stores)
    spent = await asyncio.gather(
        *(spend_token(db, "sid-1", expires_at=T0 + 60, now=T0) for db in (a, b, a, b))
    )
    assert sorted(spent) == [False, False, False, True]
    assert await spend_token(b, "sid-2", expires_at=T0 + 60, now=T0)
    # Expired entries are forgotten (the token itself is refused as expired by then).
    assert await spend_token(a, "sid-1", expires_at=T0 + 200, now=T0 + 61)
