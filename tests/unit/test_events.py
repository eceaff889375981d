"""The event unions, the tuples that narrow to them, and the streams they belong to agree."""

from __future__ import annotations

from typing import get_args

from eventstore import category_of
from statemachine.batch import BATCHES
from statemachine.decider import entity_of
from statemachine.events import (
    ALL_EVENTS,
    BATCH_EVENTS,
    REQUEST_EVENTS,
    BatchEvent,
    DomainEvent,
    RequestEvent,
)
from statemachine.request import REQUESTS


def test_event_tuples_hold_exactly_the_members_of_the_event_unions() -> None:
    assert set(REQUEST_EVENTS) == set(get_args(RequestEvent))
    assert set(BATCH_EVENTS) == set(get_args(BatchEvent))
    assert set(ALL_EVENTS) == set(get_args(RequestEvent)) | set(get_args(BatchEvent))
    assert len(get_args(DomainEvent)) == len(ALL_EVENTS)


def test_every_event_belongs_to_the_stream_category_of_its_decider() -> None:
    assert {e.stream for e in REQUEST_EVENTS} == {REQUESTS.category}
    assert {e.stream for e in BATCH_EVENTS} == {BATCHES.category}


def test_stream_names_carry_the_category_the_event_store_filters_by() -> None:
    for decider in (REQUESTS, BATCHES):
        stream = decider.stream_id("01ab-cd")
        assert category_of(stream) == decider.category
        assert entity_of(stream) == "01ab-cd"
