"""The relay's pure parts: subjects, messages, the acknowledgement window."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import msgspec
import nats.js.errors
import pytest
from nats.js import api

from eventstore import EventMetadata, RecordedEvent
from service.adapters.jetstream import (
    DATA_OMITTED,
    UNSCOPED,
    Encoder,
    company_token,
    subject_for,
    where_of,
)
from service.adapters.relay_state import Checkpoint
from service.entrypoints.relay_window import AckWindow, PublishFailed, Stopped
from service.feed import event_item

WHEN = datetime(2026, 12, 1, tzinfo=UTC)


def recorded(position: int, *, scope: str | None = "acme", data: str = '{"a":1}') -> RecordedEvent:
    return RecordedEvent(
        position=position,
        stream_id=f"request-r{position}",
        version=1,
        id=uuid.uuid4(),
        type="RequestQueued",
        data=data,
        metadata=EventMetadata(occurred_at=WHEN, actor="x", correlation_id="c-1"),
        recorded_at=WHEN,
        scope=scope,
    )


@pytest.mark.parametrize(
    ("company", "token"),
    [
        ("acme", "acme"),
        ("acme-eu_1:x@y", "acme-eu_1:x@y"),
        ("glo.bex", "glo%2Ebex"),  # a dot would split the subject
        ("a*b>c d", "a%2Ab%3Ec%20d"),
        ("ünï", "%C3%BCn%C3%AF"),
        (None, UNSCOPED),
        ("", UNSCOPED),
    ],
)
def test_company_ids_become_single_subject_tokens(company: str | None, token: str) -> None:
    assert company_token(company) == token
    assert not set(token) & set(".*> \t")


def test_no_company_id_encodes_to_the_unscoped_token() -> None:
    assert company_token("%none") == "%25none"


def test_subjects_follow_prefix_company_category_type() -> None:
    e = recorded(3, scope="glo.bex")
    assert subject_for("livedash.bl", e) == "livedash.bl.glo%2Ebex.request.RequestQueued"


def test_a_message_carries_the_event_as_the_feed_serves_it() -> None:
    e = recorded(7)
    m = Encoder("bl", 1_048_576, "S").message(e)
    assert m.payload == msgspec.json.encode(event_item(e))
    assert m.headers["Nats-Msg-Id"] == str(e.id)
    assert m.headers["Batchledger-Position"] == "7"
    assert m.headers["Batchledger-Correlation-Id"] == "c-1"
    assert DATA_OMITTED not in m.headers


def test_an_event_too_large_for_nats_goes_without_its_data_and_says_so() -> None:
    big = '{"transcript":"' + "x" * 10_000 + '"}'
    e = recorded(8, data=big)
    m = Encoder("bl", 8192, "S").message(e)
    assert len(m.payload) < 8192
    body = msgspec.json.decode(m.payload)
    assert body["data"] is None
    assert body["position"] == 8
    assert body["id"] == str(e.id)
    assert m.headers[DATA_OMITTED] == str(len(big))


def test_each_message_names_its_predecessor_so_jetstream_refuses_a_gap() -> None:
    encoder = Encoder("bl", 1_048_576, "S")
    encoder.expect(41)
    first, second, third = (encoder.message(recorded(p)) for p in (5, 6, 7))
    assert first.headers["Nats-Expected-Last-Sequence"] == "41"
    assert "Nats-Expected-Last-Msg-Id" not in first.headers
    assert second.headers["Nats-Expected-Last-Msg-Id"] == first.headers["Nats-Msg-Id"]
    assert third.headers["Nats-Expected-Last-Msg-Id"] == second.headers["Nats-Msg-Id"]
    assert {m.headers["Nats-Expected-Stream"] for m in (first, second, third)} == {"S"}


def test_where_of_never_shows_credentials() -> None:
    assert where_of("nats://u:p@a:4222, tls://b:4222") == "nats://a:4222,tls://b:4222"


def ack(seq: int) -> api.PubAck:
    return api.PubAck(stream="S", seq=seq)


async def test_the_checkpoint_moves_only_over_a_contiguous_acknowledged_prefix() -> None:
    loop = asyncio.get_running_loop()
    window = AckWindow(Checkpoint(10, 100), size=8)
    futures = [loop.create_future() for _ in range(4)]
    for i, f in enumerate(futures):
        window.sent(11 + i, f)
    futures[1].set_result(ack(102))
    futures[3].set_result(ack(104))
    assert window.settle() == Checkpoint(10, 100)  # 11 is still out
    futures[0].set_result(ack(101))
    assert window.settle() == Checkpoint(12, 102)  # 13 still out, 14 waits behind it
    futures[2].set_result(ack(103))
    assert window.settle() == Checkpoint(14, 104)
    assert len(window) == 0


async def test_messages_found_in_the_stream_settle_with_their_sequence() -> None:
    loop = asyncio.get_running_loop()
    window = AckWindow(Checkpoint(0, 0), size=4)
    window.stored(1, 51)
    f = loop.create_future()
    window.sent(2, f)
    assert window.settle() == Checkpoint(1, 51)
    f.set_result(ack(52))
    assert window.settle() == Checkpoint(2, 52)


async def test_a_refused_message_stops_the_checkpoint_before_it() -> None:
    loop = asyncio.get_running_loop()
    window = AckWindow(Checkpoint(0, 0), size=4)
    ok, bad = loop.create_future(), loop.create_future()
    window.sent(1, ok)
    window.sent(2, bad)
    ok.set_result(ack(1))
    bad.set_exception(RuntimeError("maximum messages exceeded"))
    with pytest.raises(PublishFailed) as info:
        window.settle()
    assert info.value.position == 2
    assert info.value.reason == "rejected"
    assert window.acked == Checkpoint(1, 1)


async def test_the_window_is_full_at_its_size_and_an_unanswered_message_times_out() -> None:
    loop = asyncio.get_running_loop()
    lost = loop.create_future()
    window = AckWindow(Checkpoint(0, 0), size=2)
    window.sent(1, loop.create_future())
    assert not window.full
    window.sent(2, loop.create_future())
    assert window.full
    with pytest.raises(PublishFailed) as info:
        await window.wait_oldest(0.05, lost, None)
    assert info.value.reason == "timeout"
    assert info.value.position == 1
    lost.set_result(None)
    with pytest.raises(PublishFailed) as info:
        await window.wait_oldest(5, lost, None)
    assert info.value.reason == "connection"
    window.abandon()
    assert len(window) == 0


async def test_a_duplicate_of_a_sequence_the_stream_had_before_the_session_is_refused() -> None:
    loop = asyncio.get_running_loop()
    window = AckWindow(Checkpoint(0, 0), size=4, floor=40)
    raced, forgotten = loop.create_future(), loop.create_future()
    window.sent(1, raced)
    window.sent(2, forgotten)
    raced.set_result(api.PubAck(stream="S", seq=41, duplicate=True))  # stored meanwhile
    forgotten.set_result(api.PubAck(stream="S", seq=7, duplicate=True))  # purged long ago
    with pytest.raises(PublishFailed) as info:
        window.settle()
    assert info.value.reason == "duplicate"
    assert "purged within NATS_DUPLICATE_WINDOW_SECONDS" in str(info.value)
    assert window.acked == Checkpoint(1, 41)


async def test_no_stream_answering_is_waited_out_not_refused() -> None:
    loop = asyncio.get_running_loop()
    window = AckWindow(Checkpoint(0, 0), size=4)
    f = loop.create_future()
    window.sent(1, f)
    f.set_exception(nats.js.errors.NoStreamResponseError())
    with pytest.raises(PublishFailed) as info:
        window.settle()
    assert info.value.reason == "no_stream"


async def test_stop_ends_a_wait_for_an_acknowledgement_at_once() -> None:
    loop = asyncio.get_running_loop()
    window = AckWindow(Checkpoint(0, 0), size=4)
    window.sent(1, loop.create_future())
    stopping = loop.create_future()
    loop.call_later(0.01, stopping.set_result, None)
    with pytest.raises(Stopped):
        await window.wait_oldest(30, loop.create_future(), stopping)
