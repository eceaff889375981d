"""Console sessions in PostgreSQL (service/adapters/sessions.py): lifecycle and expiry."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from eventstore import EventStore
from service.adapters.sessions import (
    create_session,
    delete_session,
    live_sessions,
    load_session,
    purge_expired,
    session_hash,
)
from service.adapters.tokens import Role, create_token, revoke_token

IDLE = timedelta(minutes=30)
DAY = timedelta(hours=24)


async def _age(pool: asyncpg.Pool, column: str, by: str) -> None:
    await pool.execute(f"UPDATE console_sessions SET {column} = {column} - interval '{by}'")


async def test_a_valid_token_opens_a_session_that_loads_its_principal(store: EventStore) -> None:
    pool = store.pool
    token = await create_token(pool, "ops", Role.admin, companies=["acme", "beta"])
    new = await create_session(pool, token, max_age=DAY)
    assert new is not None
    loaded = await load_session(pool, new.session_id, idle=IDLE)
    assert loaded is not None
    assert loaded.principal.name == "ops"
    assert loaded.principal.role is Role.admin
    assert loaded.principal.companies == frozenset({"acme", "beta"})
    assert loaded.csrf == new.session.csrf
    assert len(loaded.csrf) >= 43
    stored = await pool.fetchval("SELECT id_hash FROM console_sessions")
    assert stored == session_hash(new.session_id) != new.session_id


async def test_invalid_tokens_open_nothing(store: EventStore) -> None:
    pool = store.pool
    token = await create_token(pool, "gone", Role.superadmin)
    await revoke_token(pool, "gone")
    expiring = await create_token(pool, "brief", Role.admin, expires_in=timedelta(seconds=1))
    await pool.execute("UPDATE api_tokens SET expires_at = now() - interval '1 s'")
    for candidate in [token, expiring, "bl_0123456789abcdef_" + "x" * 43, "nonsense", ""]:
        assert await create_session(pool, candidate, max_age=DAY) is None
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0


async def test_use_restarts_the_idle_clock_but_a_peek_does_not(store: EventStore) -> None:
    pool = store.pool
    new = await create_session(pool, await create_token(pool, "a", Role.support), max_age=DAY)
    assert new is not None
    await _age(pool, "last_seen_at", "20 minutes")
    assert await load_session(pool, new.session_id, idle=IDLE, touch=False) is not None
    await _age(pool, "last_seen_at", "20 minutes")  # 40 minutes unused now
    assert await load_session(pool, new.session_id, idle=IDLE, touch=False) is None
    await pool.execute("UPDATE console_sessions SET last_seen_at = now() - interval '20 minutes'")
    assert await load_session(pool, new.session_id, idle=IDLE) is not None  # touched
    await _age(pool, "last_seen_at", "20 minutes")
    assert await load_session(pool, new.session_id, idle=IDLE) is not None, "20 min since use"


async def test_a_session_ends_at_its_absolute_expiry_however_busy(store: EventStore) -> None:
    pool = store.pool
    token = await create_token(pool, "a", Role.support)
    new = await create_session(pool, token, max_age=timedelta(hours=12))
    assert new is not None
    await _age(pool, "expires_at", "12 hours")
    assert await load_session(pool, new.session_id, idle=IDLE) is None


async def test_revoking_or_expiring_the_token_ends_its_sessions(store: EventStore) -> None:
    pool = store.pool
    first = await create_session(pool, await create_token(pool, "a", Role.admin), max_age=DAY)
    second = await create_session(pool, await create_token(pool, "b", Role.admin), max_age=DAY)
    assert first is not None
    assert second is not None
    hashes = [first.session.id_hash, second.session.id_hash]
    assert await live_sessions(pool, hashes, idle=IDLE) == set(hashes)
    await revoke_token(pool, "a")
    await pool.execute("UPDATE api_tokens SET expires_at = now() WHERE name = 'b'")
    assert await load_session(pool, first.session_id, idle=IDLE) is None
    assert await load_session(pool, second.session_id, idle=IDLE) is None
    assert await live_sessions(pool, hashes, idle=IDLE) == set()


async def test_signing_out_and_purging(store: EventStore) -> None:
    pool = store.pool
    token = await create_token(pool, "a", Role.support)
    kept, ended, idle, old = [await create_session(pool, token, max_age=DAY) for _ in range(4)]
    assert kept
    assert ended
    assert idle
    assert old
    assert await delete_session(pool, ended.session_id) is True
    assert await delete_session(pool, ended.session_id) is False
    assert await load_session(pool, ended.session_id, idle=IDLE) is None
    await pool.execute(
        "UPDATE console_sessions SET last_seen_at = now() - interval '1 hour' WHERE id_hash = $1",
        idle.session.id_hash,
    )
    await pool.execute(
        "UPDATE console_sessions SET expires_at = now() WHERE id_hash = $1", old.session.id_hash
    )
    assert await purge_expired(pool, idle=IDLE) == 2
    assert await pool.fetchval("SELECT id_hash FROM console_sessions") == kept.session.id_hash
    await revoke_token(pool, "a")
    assert await purge_expired(pool, idle=IDLE) == 1


async def test_using_a_session_records_the_tokens_use(store: EventStore) -> None:
    pool = store.pool
    token = await create_token(pool, "a", Role.support)
    new = await create_session(pool, token, max_age=DAY)
    assert new is not None
    await pool.execute("UPDATE api_tokens SET last_used_at = now() - interval '1 hour'")
    await load_session(pool, new.session_id, idle=IDLE)
    recent = await pool.fetchval(
        "SELECT last_used_at > now() - interval '1 minute' FROM api_tokens"
    )
    assert recent is True


async def test_malformed_session_ids_never_reach_the_database(store: EventStore) -> None:
    for bad in ["", "short", "x" * 44, "é" * 43, "'; DROP TABLE console_sessions; --"]:
        assert await load_session(store.pool, bad, idle=IDLE) is None
        assert await delete_session(store.pool, bad) is False
