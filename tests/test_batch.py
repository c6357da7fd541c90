"""The ordered partial batch policy on its own: the function's answer and how it is read.

No server and no fake EventBridge: ``bridge.core.batch`` is pure, so both sides of
the rule are tested against each other and against AWS's documented readings.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.batch import (
    NOT_ATTEMPTED,
    BatchOutcomes,
    Failure,
    Verdict,
    read_response,
    sequence_numbers,
)

IDS = ["100", "200", "300", "400", "500"]


def failures_of(*ids: Any) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}


# ------------------------------------------------------------------ the function's side


def test_a_batch_that_all_succeeded_reports_no_failure() -> None:
    outcomes = BatchOutcomes(IDS)
    for position in range(len(IDS)):
        outcomes.succeeded(position)
    assert outcomes.response() == {"batchItemFailures": []}
    assert outcomes.earliest() is None
    assert (outcomes.succeeded_count, outcomes.failed_count, outcomes.pending_count) == (5, 0, 0)


def test_an_empty_batch_reports_no_failure() -> None:
    assert BatchOutcomes([]).response() == {"batchItemFailures": []}


def test_only_the_earliest_failure_is_reported_whatever_the_recording_order() -> None:
    outcomes = BatchOutcomes(IDS)
    outcomes.failed(3, "InternalFailure: later")
    outcomes.succeeded(0)
    outcomes.failed(1, "ThrottlingException: first")
    outcomes.succeeded(2)
    outcomes.succeeded(4)
    assert outcomes.response() == {"batchItemFailures": [{"itemIdentifier": "200"}]}
    assert outcomes.earliest() == Failure(1, "200", "ThrottlingException: first")
    assert outcomes.failures() == [
        Failure(1, "200", "ThrottlingException: first"),
        Failure(3, "400", "InternalFailure: later"),
    ]


def test_a_record_given_no_outcome_counts_as_not_done() -> None:
    # The function stopped early (a call failed, time ran out): what it never got to
    # must come again, so the first such record is named even with no failure at all.
    outcomes = BatchOutcomes(IDS)
    outcomes.succeeded(0)
    outcomes.succeeded(1)
    assert outcomes.earliest() == Failure(2, "300", NOT_ATTEMPTED)
    assert outcomes.response() == {"batchItemFailures": [{"itemIdentifier": "300"}]}
    assert outcomes.pending_count == 3
    outcomes.failed(4, "InternalFailure")
    assert outcomes.response() == {"batchItemFailures": [{"itemIdentifier": "300"}]}


@pytest.mark.parametrize("position", [-1, 5, 99])
def test_a_position_outside_the_batch_is_the_callers_bug(position: int) -> None:
    with pytest.raises(ValueError, match="outside a batch of 5"):
        BatchOutcomes(IDS).succeeded(position)


def test_an_outcome_is_recorded_once() -> None:
    outcomes = BatchOutcomes(IDS)
    outcomes.failed(2, "InternalFailure")
    with pytest.raises(ValueError, match="record 2 already has an outcome"):
        outcomes.succeeded(2)
    with pytest.raises(ValueError, match="already has an outcome"):
        outcomes.failed(2, "again")


def test_stream_records_are_named_by_their_sequence_number() -> None:
    records: list[dict[str, Any]] = [
        {"dynamodb": {"SequenceNumber": "111"}},
        {"dynamodb": {"Keys": {}}},  # never from AWS: named "" (the whole batch fails)
        {"eventName": "INSERT"},
        {"dynamodb": {"SequenceNumber": 7}},
    ]
    assert sequence_numbers(records) == ["111", "", "", ""]
    outcomes = BatchOutcomes.for_records(records)
    assert len(outcomes) == 4
    outcomes.succeeded(0)
    outcomes.failed(1, "x")
    assert outcomes.response() == {"batchItemFailures": [{"itemIdentifier": ""}]}
    assert read_response(sequence_numbers(records), outcomes.response()).resume_at == 0


# ------------------------------------------------------------------ the event source's side


@pytest.mark.parametrize(
    "response",
    [
        None,  # a null EventResponse
        {},  # an empty EventResponse
        {"batchItemFailures": None},  # a null list
        {"batchItemFailures": []},  # an empty list
        {"statusCode": 200},  # no list at all: as null
    ],
)
def test_answers_lambda_reads_as_complete_success(response: Any) -> None:
    assert read_response(IDS, response) == Verdict(None, "")
    assert read_response(IDS, response).done


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (failures_of(None), "names no record"),  # a null itemIdentifier
        (failures_of(""), "names no record"),  # an empty itemIdentifier
        ({"batchItemFailures": [{"sequenceNumber": "300"}]}, "has no itemIdentifier"),
        (failures_of("999"), "'999' is not a record of the batch"),
        (failures_of("300", "999"), "'999' is not a record of the batch"),
        (failures_of(300), "300 is not a record of the batch"),  # a number, not the text
        (failures_of(["300"]), "is not a record of the batch"),
        ({"batchItemFailures": ["300"]}, "has no itemIdentifier"),
        ({"batchItemFailures": "300"}, "batchItemFailures is not a list"),
        ({"batchItemFailures": {"itemIdentifier": "300"}}, "batchItemFailures is not a list"),
        ({"batchItemFailures": False}, "batchItemFailures is not a list"),
        ("ok", "the response is not a JSON object: 'ok'"),
        ([{"itemIdentifier": "300"}], "the response is not a JSON object"),
        (42, "not a JSON object"),
    ],
)
def test_answers_lambda_reads_as_complete_failure(response: Any, why: str) -> None:
    verdict = read_response(IDS, response)
    assert verdict.resume_at == 0
    assert not verdict.done
    assert verdict.reason.startswith("the whole batch failed: ")
    assert why in verdict.reason


def test_a_reported_failure_resumes_at_that_record() -> None:
    verdict = read_response(IDS, failures_of("400"))
    assert verdict.resume_at == 3
    assert verdict.reason == ("batchItemFailures [{'itemIdentifier': '400'}]: from record 4 of 5")


def test_several_reported_failures_resume_at_the_earliest_in_stream_order() -> None:
    # Lambda checkpoints before the lowest sequence number named, in whatever order.
    assert read_response(IDS, failures_of("500", "200", "400")).resume_at == 1
    assert read_response(IDS, failures_of("300", "300")).resume_at == 2


def test_a_long_malformed_answer_is_quoted_short() -> None:
    verdict = read_response(IDS, "x" * 10_000)
    assert verdict.resume_at == 0
    assert len(verdict.reason) < 300 and verdict.reason.endswith("...")


# ------------------------------------------------------------------ both sides, any batch

OUTCOMES = st.lists(st.sampled_from(["ok", "failed", "none"]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(kinds=OUTCOMES, data=st.data())
def test_the_response_names_the_earliest_failure_and_the_reader_resumes_exactly_there(
    kinds: list[str], data: st.DataObject
) -> None:
    ids = [f"{4_000_000 + 17 * i}" for i in range(len(kinds))]
    outcomes = BatchOutcomes(ids)
    # Outcomes arrive in any order (PutEvents batches, re-sends): the policy is by position.
    for position in data.draw(st.permutations(range(len(kinds)))):
        if kinds[position] == "ok":
            outcomes.succeeded(position)
        elif kinds[position] == "failed":
            outcomes.failed(position, f"reason {position}")
    not_done = [position for position, kind in enumerate(kinds) if kind != "ok"]
    response = outcomes.response()
    verdict = read_response(ids, response)
    if not not_done:
        assert response == {"batchItemFailures": []}
        assert verdict.done
    else:
        earliest = not_done[0]
        assert response == {"batchItemFailures": [{"itemIdentifier": ids[earliest]}]}
        assert verdict.resume_at == earliest
        # Records before the resume point are exactly the ones that succeeded first.
        assert all(kind == "ok" for kind in kinds[:earliest])
    assert [f.position for f in outcomes.failures()] == [
        position for position, kind in enumerate(kinds) if kind == "failed"
    ]


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 30), data=st.data())
def test_any_set_of_named_records_resumes_at_the_lowest(size: int, data: st.DataObject) -> None:
    ids = [str(10**20 + i) for i in range(size)]
    named = data.draw(st.lists(st.integers(0, size - 1), min_size=1))
    assert read_response(ids, failures_of(*(ids[i] for i in named))).resume_at == min(named)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["batchItemFailures", "itemIdentifier", "x"]) | st.text(max_size=3),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(response=JSON, size=st.integers(0, 5))
def test_any_answer_reads_as_a_verdict_and_never_raises(response: Any, size: int) -> None:
    ids = [str(i) for i in range(1, size + 1)]
    verdict = read_response(ids, response)
    assert verdict.resume_at is None or 0 <= verdict.resume_at < max(size, 1)
    assert verdict.done == (verdict.reason == "")
