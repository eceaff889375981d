"""A failed batch's errors, kept in its state, and what they make of each of its requests.

Line n of a batch's input file is `request_ids[n-1]`; OpenAI names lines 1-based.
"""

from __future__ import annotations

import pytest

from service.application.ingestion import (
    INVALID_ELSEWHERE,
    Verdict,
    release_verdicts,
    retryable_batch_error,
)
from service.application.ledger import Actor
from statemachine.batch import BATCHES, Batch, evolve
from statemachine.commands import ObserveStatus
from statemachine.events import (
    BatchError,
    BatchFileUploaded,
    BatchPlanned,
    BatchRequestsReleased,
    BatchStatusObserved,
    BatchSubmissionFailed,
    BatchSubmitted,
    BatchUploadStarted,
    RequestFailed,
    RequestRequeued,
)
from statemachine.states import BatchState as BS
from statemachine.states import RequestState as RS
from tests.unit.test_use_cases import World

IDS = [f"r{n}" for n in range(1, 9)]  # r<n> is on line n
MISSING_FILE = BatchError(
    code="invalid_request",
    message="Cannot find file file-1, or organization org-emulator does not have access to it.",
    param="file_id",
)


def refused(line: int, code: str = "invalid_request", message: str = "bad line") -> BatchError:
    return BatchError(code=code, message=message, line=line, param="body")


# -- the batch keeps its errors -------------------------------------------------------


def submitted_batch() -> Batch:
    planned = BatchPlanned(batch_id="b1", company_id="acme", model="gpt-4o-mini", request_ids=IDS)
    batch = evolve(None, planned)
    for event in (
        BatchUploadStarted(batch_id="b1", filename="batchledger-b1.jsonl"),
        BatchFileUploaded(batch_id="b1", input_file_id="file-1", bytes=100),
        BatchSubmitted(batch_id="b1", openai_batch_id="batch_1", input_file_id="file-1"),
    ):
        batch = evolve(batch, event)
    return batch


def test_a_failed_batch_keeps_every_error_with_its_line_and_the_first_as_failure_code() -> None:
    errors = [refused(2), refused(5, "invalid_json_line", "Line 5 is not valid JSON.")]
    before = submitted_batch()
    failed = BatchStatusObserved(batch_id="b1", openai_status="failed", errors=errors)
    batch = evolve(before, failed)
    assert batch.state is BS.FAILED
    assert batch.errors == errors
    assert (batch.failure_code, batch.failure_message) == ("invalid_request", "bad line")


def test_a_refused_submission_is_kept_as_the_batchs_one_error_without_a_line() -> None:
    planned = BatchPlanned(batch_id="b1", company_id="acme", model="gpt-4o-mini", request_ids=IDS)
    refused_upload = BatchSubmissionFailed(batch_id="b1", code="invalid_file", message="not JSONL")
    batch = evolve(evolve(None, planned), refused_upload)
    assert batch.errors == [BatchError(code="invalid_file", message="not JSONL")]
    assert batch.failure_code == "invalid_file"


def test_a_batch_that_did_not_fail_has_no_errors() -> None:
    assert submitted_batch().errors == []


# -- the rule: is a batch error worth another batch ----------------------------------


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (BatchError(code="token_limit_exceeded", message="Enqueued token limit reached"), True),
        (BatchError(code="rate_limit_exceeded", message="slow down"), True),
        (BatchError(code="server_error", message="oops"), True),
        (MISSING_FILE, True),
        (BatchError(code="invalid_request", message="Forced failure."), False),
        (BatchError(code="invalid_request", message="bad body", line=3, param="body"), False),
        (BatchError(code="model_not_found", message="no such model", line=1), False),
        (BatchError(code="empty_file", message="The batch input file is empty."), False),
    ],
    ids=lambda v: v if isinstance(v, bool) else f"{v.code}-{v.param}",
)
def test_a_batch_error_is_retryable_only_when_transient_or_the_input_file_went_missing(
    error: BatchError, retryable: bool
) -> None:
    assert retryable_batch_error(error) is retryable


# -- what each request becomes -------------------------------------------------------


def test_the_request_on_a_refused_line_fails_with_its_error_and_the_others_are_retried() -> None:
    verdicts = release_verdicts(IDS, [refused(2)])
    assert list(verdicts) == IDS  # every request gets a verdict, none is lost
    assert verdicts["r2"] == Verdict("invalid_request", "bad line", retryable=False)
    innocent = Verdict(
        INVALID_ELSEWHERE,
        "not run: OpenAI refused line 2 (invalid_request) of this batch",
        retryable=True,
        charged=False,
    )
    assert {rid: v for rid, v in verdicts.items() if rid != "r2"} == dict.fromkeys(
        [rid for rid in IDS if rid != "r2"], innocent
    )


def test_a_line_with_several_errors_is_blamed_for_its_first() -> None:
    first = refused(3, "invalid_url", "The URL does not match the batch endpoint.")
    verdicts = release_verdicts(IDS, [first, refused(3, "invalid_request", "second")])
    assert verdicts["r3"] == Verdict(first.code, first.message, retryable=False)
    assert "line 3 (invalid_url)" in verdicts["r1"].message


def test_a_refused_line_whose_error_is_transient_is_retried_with_that_error() -> None:
    verdicts = release_verdicts(IDS, [refused(4, "server_error", "try again")])
    assert verdicts["r4"] == Verdict("server_error", "try again", retryable=True)


def test_the_others_message_names_five_refused_lines_then_how_many_more() -> None:
    errors = [refused(n) for n in (8, 1, 3, 5, 7, 2, 6)]
    verdicts = release_verdicts(IDS, errors)
    assert verdicts["r4"] == Verdict(
        INVALID_ELSEWHERE,
        "not run: OpenAI refused lines 1 (invalid_request), 2 (invalid_request), "
        "3 (invalid_request), 5 (invalid_request), 6 (invalid_request) and 2 more of this batch",
        retryable=True,
        charged=False,
    )
    assert {rid for rid, v in verdicts.items() if not v.retryable} == {
        f"r{n}" for n in (1, 2, 3, 5, 6, 7, 8)
    }


def test_every_line_refused_for_an_unsupported_model_fails_every_request_for_good() -> None:
    message = "The provided model 'gpt-imaginary' is not supported by the Batch API."
    errors = [
        BatchError(code="model_not_found", message=message, line=n, param="body.model")
        for n in range(1, len(IDS) + 1)
    ]
    verdicts = release_verdicts(IDS, errors)
    assert set(verdicts.values()) == {Verdict("model_not_found", message, retryable=False)}


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (MISSING_FILE, True),
        (BatchError(code="token_limit_exceeded", message="Enqueued token limit reached"), True),
        (BatchError(code="too_many_requests", message="more than 50,000 requests"), False),
    ],
    ids=["missing-input-file", "token-limit", "too-many-requests"],
)
def test_an_error_without_a_line_applies_to_every_request(
    error: BatchError, retryable: bool
) -> None:
    verdicts = release_verdicts(IDS, [error])
    assert verdicts == dict.fromkeys(IDS, Verdict(error.code, error.message, retryable))


def test_with_errors_with_and_without_lines_the_unnamed_requests_get_the_lineless_one() -> None:
    verdicts = release_verdicts(IDS, [refused(2), MISSING_FILE])
    assert verdicts["r2"].code == "invalid_request"
    assert not verdicts["r2"].retryable
    assert verdicts["r1"] == Verdict(MISSING_FILE.code, MISSING_FILE.message, retryable=True)


def test_a_refused_line_beyond_the_file_blames_no_request_and_all_are_retried() -> None:
    verdicts = release_verdicts(IDS, [refused(len(IDS) + 1)])
    assert {v.code for v in verdicts.values()} == {INVALID_ELSEWHERE}
    assert all(v.retryable for v in verdicts.values())


def test_a_batch_failed_without_any_error_fails_its_requests_for_good() -> None:
    verdicts = release_verdicts(IDS, [])
    assert set(verdicts.values()) == {Verdict("batch_failed", "the batch failed", False)}


def test_fifty_thousand_requests_share_a_few_verdicts() -> None:
    ids = [f"r{n}" for n in range(1, 50_001)]
    verdicts = release_verdicts(ids, [refused(17), refused(49_999)])
    assert len(verdicts) == 50_000
    assert len({id(v) for v in verdicts.values()}) == 3


# -- release, on the in-memory ledger ------------------------------------------------


async def failed_in_validation(w: World, ids: list[str], errors: list[BatchError]) -> str:
    """Submit ids as one batch, have OpenAI fail it with these errors, and release it."""
    bid, _ = await w.submitted(ids)
    failed = ObserveStatus(openai_status="failed", errors=errors)
    await w.ledger.execute(BATCHES, bid, failed, Actor("batch-poller"))
    return bid


async def test_release_fails_the_refused_line_for_good_and_requeues_the_rest() -> None:
    w = World()
    ids = await w.queue(4)  # r0 .. r3: r1 is on line 2
    bid = await failed_in_validation(w, ids, [refused(2)])
    failures = await w.ingestion.release(bid)
    assert failures is not None
    assert [(f.request_id, f.code, f.requeued) for f in failures] == [
        ("r1", "invalid_request", False),  # failed for good first: what a person must see
        ("r0", INVALID_ELSEWHERE, True),
        ("r2", INVALID_ELSEWHERE, True),
        ("r3", INVALID_ELSEWHERE, True),
    ]
    assert await w.states(ids) == {
        "r0": RS.PENDING_BATCHING,
        "r1": RS.PROCESSING_FAILED,
        "r2": RS.PENDING_BATCHING,
        "r3": RS.PENDING_BATCHING,
    }
    assert (await w.batch_events(bid))[-1] == BatchRequestsReleased(
        batch_id=bid, requeued=3, failed=1
    )
    innocent = (await w.request_events("r0"))[2]
    assert isinstance(innocent, RequestFailed)
    assert (innocent.code, innocent.retryable, innocent.attempt) == (INVALID_ELSEWHERE, True, 1)
    assert innocent.message == "not run: OpenAI refused line 2 (invalid_request) of this batch"


async def test_requests_refused_elsewhere_are_retried_without_using_their_attempts() -> None:
    w = World(max_attempts=2)
    ids = await w.queue(4)
    for round_ids in (ids, ids[1:], ids[2:]):  # line 1 is refused each time: r0, r1, then r2
        bid = await failed_in_validation(w, round_ids, [refused(1)])
        assert (await w.batch(bid)).request_ids == round_ids
        await w.ingestion.release(bid)
    states = await w.states(ids)
    assert states == {
        "r0": RS.PROCESSING_FAILED,
        "r1": RS.PROCESSING_FAILED,
        "r2": RS.PROCESSING_FAILED,
        "r3": RS.PENDING_BATCHING,  # in three failed batches, more than max_attempts, and alive
    }
    r3 = await w.request("r3")
    assert (r3.attempts, r3.attempts - r3.retry_base) == (3, 0)
    requeues = [e for e in await w.request_events("r3") if isinstance(e, RequestRequeued)]
    assert [e.reason for e in requeues] == ["not_at_fault"] * 3
