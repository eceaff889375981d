"""`batchledger tokens create|list|revoke`."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from service.adapters.database import migrate
from service.adapters.tokens import (
    Role,
    TokenError,
    create_token,
    list_tokens,
    parse_duration,
    revoke_token,
)


async def run_tokens(dsn: str, args: argparse.Namespace) -> int:
    """Carry out one token action; 1 when it could not be done."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        if args.action == "create":
            try:
                expires_in = parse_duration(args.expires_in) if args.expires_in else None
                token = await create_token(
                    conn,
                    args.name,
                    Role[args.role],
                    companies=args.company or None,
                    expires_in=expires_in,
                )
            except TokenError as exc:
                print(f"batchledger tokens: {exc}", file=sys.stderr)
                return 1
            print(token)
            scope = ", ".join(sorted(set(args.company))) if args.company else "every company"
            print(
                f"token {args.name!r} ({args.role}, {scope}) created; it is shown only this once",
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
                scope = ",".join(t.companies) if t.companies else "*"
                expires = f"expires {t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "no expiry"
                used = f"used {t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never used"
                print(
                    f"{t.name:<24} {t.role.name:<11} {scope:<20} {created}  {expires}  {used}"
                    f"  {state}  id {t.token_id}"
                )
        elif not await revoke_token(conn, args.name):
            print(f"batchledger tokens: no active token named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"token {args.name!r} revoked")
    finally:
        await conn.close()
    return 0
