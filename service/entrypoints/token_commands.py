"""`batchledger tokens create|list|revoke`."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from service.adapters.database import migrate
from service.adapters.tokens import Role, TokenError, create_token, list_tokens, revoke_token


async def run_tokens(dsn: str, args: argparse.Namespace) -> int:
    """Carry out one token action; 1 when it could not be done."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        if args.action == "create":
            try:
                token = await create_token(conn, args.name, Role[args.role])
            except TokenError as exc:
                print(f"batchledger tokens: {exc}", file=sys.stderr)
                return 1
            print(token)
            print(
                f"token {args.name!r} ({args.role}) created; it is shown only this once",
                file=sys.stderr,
            )
        elif args.action == "list":
            for t in await list_tokens(conn):
                state = (
                    f"revoked {t.revoked_at:%Y-%m-%d %H:%M} by {t.revoked_by}"
                    if t.revoked_at
                    else "active"
                )
                created = f"created {t.created_at:%Y-%m-%d %H:%M} by {t.created_by}"
                print(f"{t.name:<24} {t.role.name:<11} {created}  {state}")
        elif not await revoke_token(conn, args.name):
            print(f"batchledger tokens: no active token named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"token {args.name!r} revoked")
    finally:
        await conn.close()
    return 0
