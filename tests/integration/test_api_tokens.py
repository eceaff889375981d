"""Token administration: superadmins list, create and revoke tokens over HTTP; the CLI too."""

from __future__ import annotations

import pytest

from service.entrypoints.cli import main
from tests.integration.api_fixtures import Api

TOKENS = "/api/admin/legacy/tokens"


async def create(api: Api, name: str, role: str = "support") -> dict[str, object]:
    r = await api.client.post(
        TOKENS, json={"name": name, "role": role}, headers=api.auth("superadmin")
    )
    assert r.status == 201, await r.text()
    assert r.headers["Cache-Control"] == "no-store"
    body: dict[str, object] = await r.json()
    return body


async def listed(api: Api) -> dict[str, dict[str, object]]:
    r = await api.client.get(TOKENS, headers=api.auth("superadmin"))
    assert r.status == 200
    text = await r.text()
    return {t["name"]: t for t in (await r.json())["tokens"]} | {"__text__": {"raw": text}}


async def test_a_created_token_works_at_once_with_its_role_and_is_listed_without_its_secret(
    api: Api,
) -> None:
    made = await create(api, "integrator-1", "support")
    token = str(made["token"])
    assert (made["name"], made["role"]) == ("integrator-1", "support")
    assert token.startswith("bl_")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.client.get("/api/admin/legacy/summary", headers=headers)).status == 200
    requeue = await api.client.post(
        "/api/admin/legacy/requests/requeue", json={"requestIds": ["r1"]}, headers=headers
    )
    assert requeue.status == 403
    tokens = await listed(api)
    assert tokens["integrator-1"]["role"] == "support"
    assert tokens["integrator-1"]["createdBy"] == "token:superadmin-token"
    assert tokens["integrator-1"]["revokedAt"] is None
    assert tokens["admin-token"]["createdBy"] == "cli"
    assert token.split("_", 2)[2] not in str(tokens["__text__"]["raw"])


async def test_revoking_over_http_stops_the_token_at_once_and_records_who_did_it(
    api: Api,
) -> None:
    token = str((await create(api, "short-lived", "admin"))["token"])
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.client.get("/api/admin/legacy/summary", headers=headers)).status == 200
    r = await api.client.post(f"{TOKENS}/short-lived/revoke", headers=api.auth("superadmin"))
    assert r.status == 200
    assert await r.json() == {"ok": True, "name": "short-lived", "revoked": True}
    assert (await api.client.get("/api/admin/legacy/summary", headers=headers)).status == 401
    entry = (await listed(api))["short-lived"]
    assert entry["revokedBy"] == "token:superadmin-token"
    assert entry["revokedAt"] is not None
    again = await api.client.post(f"{TOKENS}/short-lived/revoke", headers=api.auth("superadmin"))
    assert again.status == 404
    assert (await again.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "x", "role": "root"}, "invalid_body"),
        ({"name": "has space", "role": "support"}, "invalid_body"),
        ({"name": "x", "role": "support", "secret": "mine"}, "invalid_body"),
        ({"role": "support"}, "invalid_body"),
    ],
)
async def test_a_bad_token_body_is_a_400_that_creates_nothing(
    api: Api, body: dict[str, object], code: str
) -> None:
    r = await api.client.post(TOKENS, json=body, headers=api.auth("superadmin"))
    assert r.status == 400
    assert (await r.json())["error"]["code"] == code
    assert set(await listed(api)) == {
        "support-token",
        "admin-token",
        "superadmin-token",
        "old-token",
        "__text__",
    }


async def test_a_token_name_is_never_reused_even_after_revocation(api: Api) -> None:
    await create(api, "ops")
    for _ in range(2):
        r = await api.client.post(
            TOKENS, json={"name": "ops", "role": "admin"}, headers=api.auth("superadmin")
        )
        assert r.status == 409
        assert (await r.json())["error"]["code"] == "token_name_taken"
        await api.client.post(f"{TOKENS}/ops/revoke", headers=api.auth("superadmin"))


def test_tokens_command_creates_lists_and_revokes_and_never_reuses_a_name(
    db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["tokens", "create", "--name", "ops", "--role", "admin", "--database-url", db_dsn])
        == 0
    )
    token = capsys.readouterr().out.strip()
    assert token.startswith("bl_")
    assert main(["tokens", "revoke", "ops", "--database-url", db_dsn]) == 0
    capsys.readouterr()
    assert main(["tokens", "list", "--database-url", db_dsn]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.split()[:2] == ["ops", "admin"]
    assert "by cli" in line
    assert "revoked" in line
    assert token.split("_", 2)[2] not in line
    assert (
        main(["tokens", "create", "--name", "ops", "--role", "admin", "--database-url", db_dsn])
        == 1
    )
    assert "names are never reused" in capsys.readouterr().err
    assert main(["tokens", "revoke", "nobody", "--database-url", db_dsn]) == 1
    capsys.readouterr()
    bad = ["tokens", "create", "--name", "two words", "--role", "support"]
    assert main([*bad, "--database-url", db_dsn]) == 1
    assert "'two words' is not a token name" in capsys.readouterr().err
