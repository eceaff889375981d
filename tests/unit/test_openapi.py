"""The OpenAPI document tells the truth (issue 13, finding 16): it validates, and it
declares the headers, the one-of body rule, the body limit, the event stream, the token
fields and every status each route can answer. Each assertion failed on the document
before this change."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from openapi_spec_validator import validate

from service.entrypoints.api.app import MAX_BODY_BYTES
from service.entrypoints.api.openapi import document
from service.entrypoints.api.routes import BASE, ROUTES
from service.entrypoints.api.schemas import AT_PATTERN

DOC = document()
STREAM = f"{BASE}/events/stream"
AUTH = {401, 403, 429, 503}

STATUSES = {
    ("GET", f"{BASE}/summary"): {200, 400, 404} | AUTH,
    ("GET", f"{BASE}/requests"): {200, 400, 404} | AUTH,
    ("POST", f"{BASE}/requests/requeue"): {200, 400, 408, 409, 413, 415} | AUTH,
    ("POST", f"{BASE}/requests"): {200, 201, 400, 408, 409, 413, 415} | AUTH,
    ("GET", f"{BASE}/requests/{{id}}"): {200, 400, 404} | AUTH,
    ("GET", f"{BASE}/requests/{{id}}/history"): {200, 400, 404} | AUTH,
    ("GET", f"{BASE}/batches"): {200, 400} | AUTH,
    ("GET", f"{BASE}/batches/{{id}}"): {200, 400, 404} | AUTH,
    ("GET", f"{BASE}/batches/{{id}}/history"): {200, 400, 404} | AUTH,
    ("POST", f"{BASE}/batches/{{id}}/cancel"): {202, 400, 404, 409} | AUTH,
    ("GET", f"{BASE}/events"): {200, 400} | AUTH,
    ("GET", STREAM): {200, 400} | AUTH,
    ("GET", f"{BASE}/tokens"): {200, 400} | AUTH,
    ("POST", f"{BASE}/tokens"): {201, 400, 408, 409, 413, 415} | AUTH,
    ("POST", f"{BASE}/tokens/{{id}}/revoke"): {200, 400, 404} | AUTH,
    ("GET", f"{BASE}/openapi.json"): {200} | AUTH,
    ("GET", "/metrics"): {200} | AUTH,
    ("GET", "/healthz"): {200},
    ("GET", "/readyz"): {200, 503},
}
"""Every status each route can answer, read from its handler, the middlewares and the
use cases it calls: no more, no fewer."""


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in DOC["paths"].items()
        for method, op in item.items()
    ]


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = DOC["components"][kind][name]
    return node


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}
    )


def test_the_document_validates_and_has_every_route() -> None:
    validate(DOC)
    assert {(m, p) for m, p, _ in operations()} == {(r.method, r.path) for r in ROUTES}


@pytest.mark.parametrize(("method", "path"), sorted(STATUSES))
def test_each_route_declares_exactly_the_statuses_it_answers(method: str, path: str) -> None:
    declared = {int(s) for s in DOC["paths"][path][method.lower()]["responses"]}
    assert declared == STATUSES[method, path]


def test_routes_with_an_id_declare_404_and_writes_declare_403() -> None:
    for method, path, op in operations():
        if "{id}" in path:
            assert "404" in op["responses"], (method, path)
        if method == "POST":
            assert "403" in op["responses"], (method, path)
    forbidden = DOC["paths"][f"{BASE}/requests"]["post"]["responses"]["403"]["description"]
    assert "companies" in forbidden  # a write for a company outside the token's scope


def test_x_request_id_is_an_optional_request_header_and_a_header_of_every_answer() -> None:
    for method, path, op in operations():
        params = [resolve(p) for p in op["parameters"]]
        (request_id,) = [p for p in params if p["name"] == "X-Request-Id"]
        assert (request_id["in"], request_id["required"]) == ("header", False)
        for status, response in op["responses"].items():
            header = resolve(response["headers"]["X-Request-Id"])
            assert header["required"], (method, path, status)


def test_retry_after_on_429_and_503_and_www_authenticate_on_401() -> None:
    for method, path, op in operations():
        for status, response in op["responses"].items():
            headers = {k: resolve(v) for k, v in response["headers"].items()}
            envelope = "ErrorResponse" in str(response["content"])
            if status in ("429", "503") and envelope:
                assert headers["Retry-After"]["required"], (method, path, status)
                assert headers["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
            if status == "401":
                assert headers["WWW-Authenticate"]["schema"]["const"] == "Bearer"
    readyz = DOC["paths"]["/readyz"]["get"]["responses"]["503"]
    assert "Retry-After" not in readyz["headers"]  # not ready: a Health body, no Retry-After


def test_last_event_id_is_a_header_of_the_stream_holding_ascii_digits() -> None:
    params = [resolve(p) for p in DOC["paths"][STREAM]["get"]["parameters"]]
    (last,) = [p for p in params if p["name"] == "Last-Event-ID"]
    assert (last["in"], last["required"]) == ("header", False)
    pattern = re.compile(last["schema"]["pattern"])
    assert pattern.search("1200")
    for bad in ("²", "١٢", "+1", "1.0", " ", "", "1" * 19):
        assert not pattern.search(bad), bad
    assert all(
        "Last-Event-ID" not in str(op["parameters"]) for m, p, op in operations() if p != STREAM
    )


def test_the_stream_is_text_event_stream_with_its_frames_described() -> None:
    ok = DOC["paths"][STREAM]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/event-stream"]
    frame = ok["content"]["text/event-stream"]["schema"]
    assert frame["required"] == ["id", "event", "data"]
    assert frame["properties"]["id"]["pattern"] == "^[0-9]+$"
    data = frame["properties"]["data"]
    assert (data["type"], data["contentMediaType"]) == ("string", "application/json")
    assert data["contentSchema"] == {"$ref": "#/components/schemas/EventItem"}
    for word in (
        "`id: <position>`",
        "`event: <type>`",
        "`data: ",
        "`: keepalive`",
        "Last-Event-ID",
    ):
        assert word in ok["description"], word


def test_an_enqueue_body_has_exactly_one_of_transcript_and_messages() -> None:
    body = validator("EnqueueBody")
    base = {"companyId": "acme", "sessionId": "S-1"}
    messages = [{"role": "User", "content": "When is payday?"}]
    assert body.is_valid({**base, "transcript": "[01.10.2025 08:40:19] User: hi"})
    assert body.is_valid({**base, "messages": messages})
    assert body.is_valid({**base, "messages": messages, "transcript": None})
    assert not body.is_valid(base)
    assert not body.is_valid({**base, "transcript": None, "messages": None})
    assert not body.is_valid(
        {**base, "transcript": "[01.10.2025 08:40:19] U: x", "messages": messages}
    )


def test_every_request_body_states_the_body_limit_and_413() -> None:
    bodies = [(m, p, op) for m, p, op in operations() if "requestBody" in op]
    assert {(m, p) for m, p, _ in bodies} == {
        ("POST", f"{BASE}/requests/requeue"),
        ("POST", f"{BASE}/requests"),
        ("POST", f"{BASE}/tokens"),
    }
    for method, path, op in bodies:
        assert str(MAX_BODY_BYTES) in op["requestBody"]["description"], (method, path)
        assert "413" in op["responses"], (method, path)
        shape = resolve(op["requestBody"]["content"]["application/json"]["schema"])
        assert str(MAX_BODY_BYTES) in shape["description"], (method, path)
    # The maxima of the fields allow far more than the limit: the limit is what is stated.
    enqueue = DOC["components"]["schemas"]["EnqueueBody"]["properties"]["messages"]["anyOf"][0]
    content = DOC["components"]["schemas"]["MessageIn"]["properties"]["content"]
    assert enqueue["maxItems"] * content["maxLength"] > MAX_BODY_BYTES


def test_the_examples_of_request_bodies_are_valid() -> None:
    for method, path, op in operations():
        media = op.get("requestBody", {}).get("content", {}).get("application/json")
        if media is None:
            continue
        name = media["schema"]["$ref"].rsplit("/", 1)[1]
        assert media["examples"], (method, path)
        for example in media["examples"].values():
            errors = list(validator(name).iter_errors(example["value"]))
            assert not errors, (method, path, errors)


def test_token_shapes_carry_scope_expiry_last_use_and_token_id() -> None:
    schemas = DOC["components"]["schemas"]
    listed = DOC["paths"][f"{BASE}/tokens"]["get"]["responses"]["200"]["content"]
    assert listed["application/json"]["schema"] == {"$ref": "#/components/schemas/TokensResponse"}
    assert {"tokenId", "name", "role", "companies", "createdAt", "createdBy"} <= set(
        schemas["TokenItem"]["properties"]
    )
    assert {"expiresAt", "lastUsedAt", "revokedAt", "revokedBy"} <= set(
        schemas["TokenItem"]["properties"]
    )
    assert {"companies", "expiresIn"} <= set(schemas["TokenBody"]["properties"])
    assert {"token", "companies", "expiresAt"} <= set(schemas["TokenCreatedResponse"]["properties"])
    name = re.compile(schemas["TokenBody"]["properties"]["name"]["pattern"])
    assert name.search("integrator-acme")
    assert not name.search("-rm")


def test_links_chain_a_created_request_and_a_created_token() -> None:
    targets = {op["operationId"]: (m, p, op) for m, p, op in operations()}
    created = DOC["paths"][f"{BASE}/requests"]["post"]["responses"]
    for status in ("200", "201"):
        link = created[status]["links"]["GetRequest"]
        assert targets[link["operationId"]][1] == f"{BASE}/requests/{{id}}"
        assert link["parameters"]["id"] == "$response.body#/requestId"
    token = DOC["paths"][f"{BASE}/tokens"]["post"]["responses"]["201"]["links"]["RevokeToken"]
    assert targets[token["operationId"]][1] == f"{BASE}/tokens/{{id}}/revoke"
    assert token["parameters"]["id"] == "$response.body#/name"
    for _, _, op in operations():  # every link names an operation and parameters it has
        for response in op["responses"].values():
            for link in response.get("links", {}).values():
                _, _, target = targets[link["operationId"]]
                names = {resolve(p)["name"] for p in target["parameters"]}
                assert {k.split(".")[-1] for k in link.get("parameters", {})} <= names, link


@settings(max_examples=200)
@given(st.from_regex(AT_PATTERN, fullmatch=True))
def test_every_message_time_the_document_allows_is_one_the_server_reads(text: str) -> None:
    msgspec.json.decode(msgspec.json.encode(text), type=datetime)
