"""Per-recipient responses, as docs/ARCHITECTURE.md "Priority and finality" specifies them.

The expected outcome of every (current, incoming) pair is written out below as a grid, derived by
hand from the rules in docs/ARCHITECTURE.md, never by calling `decide`:

- a final response never changes (exception: Unknown set after a crash, see the last grid row);
- a new non-final response replaces the current one only if its rank is higher;
- Spam complaint and Unsubscribed replace any non-final response;
- a failure final (Hard bounce, Blocked, Dropped, Delivery error, Unknown) replaces Planned, Sent to
  provider, Soft bounce and Delivered, not Opened or Clicked (engagement proves delivery);
- a not-sent response (the five eligibility responses, Canceled, Stopped) is only given to a
  recipient that was never handed off, i.e. one still Planned or Deferred (refused for now, rank
  between Planned and Sent to provider);
- Unknown set after a crash is replaced by any later provider or tracking event (it proves the message
  went out). Delivery error is our own failure to hand over, not such evidence, and a not-sent
  response is not either.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.responses import FAILURES, FINAL, LABELS, NOT_SENT, RANK, Response, decide, is_final

R = Response

ABBREV: dict[str, Response] = {
    "PL": R.PLANNED, "DF": R.DEFERRED, "SE": R.SENT, "SB": R.SOFT_BOUNCE, "DE": R.DELIVERED, "OP": R.OPENED,
    "CL": R.CLICKED, "SP": R.SPAM, "UN": R.UNSUBSCRIBED, "HB": R.HARD_BOUNCE, "BL": R.BLOCKED,
    "DR": R.DROPPED, "DX": R.DELIVERY_ERROR, "UK": R.UNKNOWN, "DU": R.DUPLICATE,
    "DN": R.DO_NOT_EMAIL, "TU": R.TYPE_UNSUBSCRIBED, "IA": R.INVALID_ADDRESS, "IN": R.INACTIVE,
    "CA": R.CANCELED, "EX": R.EXPIRED,
}
COLUMNS = "PL DF SE SB DE OP CL SP UN HB BL DR DX UK DU DN TU IA IN CA EX".split()

# Row: the current response. Column: the incoming one. Cell: the new response, "." = unchanged.
GRID = """
      PL DF SE SB DE OP CL SP UN HB BL DR DX UK DU DN TU IA IN CA EX
PL    .  DF SE SB DE OP CL SP UN HB BL DR DX UK DU DN TU IA IN CA EX
DF    .  .  SE SB DE OP CL SP UN HB BL DR DX UK DU DN TU IA IN CA EX
SE    .  .  .  SB DE OP CL SP UN HB BL DR DX UK .  .  .  .  .  .  .
SB    .  .  .  .  DE OP CL SP UN HB BL DR DX UK .  .  .  .  .  .  .
DE    .  .  .  .  .  OP CL SP UN HB BL DR DX UK .  .  .  .  .  .  .
OP    .  .  .  .  .  .  CL SP UN .  .  .  .  .  .  .  .  .  .  .  .
CL    .  .  .  .  .  .  .  SP UN .  .  .  .  .  .  .  .  .  .  .  .
SP    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
UN    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
HB    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
BL    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
DR    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
DX    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
UK    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
DU    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
DN    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
TU    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
IA    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
IN    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
CA    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
EX    .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .
"""

# With crash_unknown=True only the Unknown row differs: any provider or tracking event lifts it.
CRASH_UNKNOWN_ROW = "UK    .  .  SE SB DE OP CL SP UN HB BL DR .  .  .  .  .  .  .  .  ."


def _parse_row(line: str) -> tuple[Response, dict[Response, Response | None]]:
    name, *cells = line.split()
    assert len(cells) == len(COLUMNS), line
    return ABBREV[name], {
        ABBREV[col]: (None if cell == "." else ABBREV[cell]) for col, cell in zip(COLUMNS, cells, strict=True)
    }


def _table(crash_unknown: bool) -> dict[tuple[Response, Response], Response | None]:
    header, *lines = GRID.strip().splitlines()
    assert header.split() == COLUMNS
    rows = dict(_parse_row(line) for line in lines)
    if crash_unknown:
        current, row = _parse_row(CRASH_UNKNOWN_ROW)
        rows[current] = row
    return {(cur, inc): out for cur, row in rows.items() for inc, out in row.items()}


TABLE = {False: _table(False), True: _table(True)}
CASES = [
    pytest.param(cur, inc, crash, expected, id=f"{cur.value}<-{inc.value}{'-crash' if crash else ''}")
    for crash in (False, True)
    for (cur, inc), expected in TABLE[crash].items()
]


def test_the_table_covers_every_pair_of_the_twenty_responses() -> None:
    assert len(Response) == 21
    assert set(ABBREV.values()) == set(Response)
    for crash in (False, True):
        assert set(TABLE[crash]) == {(c, i) for c in Response for i in Response}
    assert len(CASES) == 2 * 21 * 21


@pytest.mark.parametrize(("current", "incoming", "crash_unknown", "expected"), CASES)
def test_decide_every_pair(current: Response, incoming: Response, crash_unknown: bool,
                           expected: Response | None) -> None:
    assert decide(current, incoming, crash_unknown=crash_unknown) == expected


def test_crash_unknown_default_is_false() -> None:
    assert decide(R.UNKNOWN, R.DELIVERED) is None
    assert decide(R.UNKNOWN, R.DELIVERED, crash_unknown=True) is R.DELIVERED


# --- the response table itself ---------------------------------------------------------------

@pytest.mark.parametrize(("response", "rank"), [
    (R.PLANNED, 0), (R.DEFERRED, 5), (R.SENT, 10), (R.SOFT_BOUNCE, 15), (R.DELIVERED, 20), (R.OPENED, 30),
    (R.CLICKED, 40), (R.SPAM, 50), (R.UNSUBSCRIBED, 60),
])
def test_rank(response: Response, rank: int) -> None:
    assert RANK[response] == rank


def test_only_the_ranked_responses_have_a_rank() -> None:
    assert set(RANK) == {R.PLANNED, R.DEFERRED, R.SENT, R.SOFT_BOUNCE, R.DELIVERED, R.OPENED, R.CLICKED,
                         R.SPAM, R.UNSUBSCRIBED}


NON_FINAL = {R.PLANNED, R.DEFERRED, R.SENT, R.SOFT_BOUNCE, R.DELIVERED, R.OPENED, R.CLICKED}


@pytest.mark.parametrize("response", list(Response))
def test_finality(response: Response) -> None:
    assert is_final(response) is (response not in NON_FINAL)
    assert (response in FINAL) is (response not in NON_FINAL)


def test_failure_and_not_sent_sets() -> None:
    assert FAILURES == {R.HARD_BOUNCE, R.BLOCKED, R.DROPPED, R.DELIVERY_ERROR, R.UNKNOWN}
    assert NOT_SENT == {R.DUPLICATE, R.DO_NOT_EMAIL, R.TYPE_UNSUBSCRIBED, R.INVALID_ADDRESS,
                        R.INACTIVE, R.CANCELED, R.EXPIRED}


@pytest.mark.parametrize(("response", "label"), [
    (R.PLANNED, "Planned"), (R.DEFERRED, "Deferred"), (R.SENT, "Sent to provider"), (R.SOFT_BOUNCE, "Soft bounce"),
    (R.DELIVERED, "Delivered"), (R.OPENED, "Opened"), (R.CLICKED, "Clicked"),
    (R.SPAM, "Spam complaint"), (R.UNSUBSCRIBED, "Unsubscribed"), (R.HARD_BOUNCE, "Hard bounce"),
    (R.BLOCKED, "Blocked"), (R.DROPPED, "Dropped"), (R.DELIVERY_ERROR, "Delivery error"),
    (R.UNKNOWN, "Unknown"), (R.DUPLICATE, "Canceled (duplicate)"),
    (R.DO_NOT_EMAIL, "Canceled (do not email)"), (R.TYPE_UNSUBSCRIBED, "Canceled (unsubscribed by type)"),
    (R.INVALID_ADDRESS, "Invalid address"), (R.INACTIVE, "Suppressed (inactive 2 years)"),
    (R.CANCELED, "Canceled"), (R.EXPIRED, "Stopped (expired)"),
])
def test_labels(response: Response, label: str) -> None:
    assert LABELS[response] == label


# --- properties over sequences of events -----------------------------------------------------

def _apply(current: Response, events: list[Response], *, crash_unknown: bool = False) -> list[Response]:
    """Every response the recipient holds, starting from `current`."""
    seen = [current]
    for event in events:
        new = decide(current, event, crash_unknown=crash_unknown and current is R.UNKNOWN)
        if new is not None:
            current = new
            crash_unknown = False  # the crash flag belongs to the Unknown it was set with
        seen.append(current)
    return seen


responses = st.sampled_from(list(Response))
non_final = st.sampled_from(sorted(NON_FINAL, key=lambda r: RANK[r]))
PROP = settings(max_examples=300, deadline=None)


@PROP
@given(st.sampled_from(sorted(FINAL)), st.lists(responses, max_size=30))
def test_a_final_response_never_changes(final: Response, events: list[Response]) -> None:
    assert set(_apply(final, events)) == {final}


@PROP
@given(non_final, st.lists(non_final, max_size=30))
def test_through_non_final_events_the_rank_never_decreases(start: Response, events: list[Response]) -> None:
    ranks = [RANK[r] for r in _apply(start, events)]
    assert ranks == sorted(ranks)
    assert ranks[-1] == max([RANK[start], *(RANK[e] for e in events)])


DELIVERY_AND_ENGAGEMENT = [R.SENT, R.SOFT_BOUNCE, R.DELIVERED, R.OPENED, R.CLICKED]


@PROP
@given(st.sets(st.sampled_from(DELIVERY_AND_ENGAGEMENT), min_size=1).flatmap(
    lambda chosen: st.permutations(sorted(chosen))))
def test_any_order_of_non_final_events_ends_at_the_highest_rank(events: list[Response]) -> None:
    assert _apply(R.PLANNED, events)[-1] is max(events, key=lambda r: RANK[r])


@PROP
@given(st.lists(st.sampled_from(DELIVERY_AND_ENGAGEMENT), max_size=10), st.sampled_from([R.SPAM, R.UNSUBSCRIBED]),
       st.lists(responses, max_size=10))
def test_spam_or_unsubscribe_ends_the_story(before: list[Response], overriding: Response,
                                            after: list[Response]) -> None:
    assert _apply(R.PLANNED, [*before, overriding, *after])[-1] is overriding


EVIDENCE = sorted(set(Response) - NOT_SENT - {R.PLANNED, R.DEFERRED, R.UNKNOWN, R.DELIVERY_ERROR})


@PROP
@given(st.lists(st.sampled_from(sorted(NOT_SENT | {R.PLANNED, R.UNKNOWN, R.DELIVERY_ERROR})), max_size=5),
       st.sampled_from(EVIDENCE))
def test_crash_unknown_is_replaced_by_any_later_evidence(noise: list[Response], evidence: Response) -> None:
    seen = _apply(R.UNKNOWN, [*noise, evidence], crash_unknown=True)
    assert seen[:-1] == [R.UNKNOWN] * (len(noise) + 1)
    assert seen[-1] is evidence


@PROP
@given(st.sampled_from(EVIDENCE), st.lists(responses, max_size=20))
def test_after_crash_unknown_is_lifted_the_usual_rules_apply(evidence: Response, events: list[Response]) -> None:
    lifted = _apply(R.UNKNOWN, [evidence, *events], crash_unknown=True)
    assert lifted[1:] == _apply(evidence, events)


@PROP
@given(st.lists(responses, max_size=20))
def test_unknown_without_the_crash_flag_is_final(events: list[Response]) -> None:
    assert set(_apply(R.UNKNOWN, events)) == {R.UNKNOWN}


@PROP
@given(responses, responses, st.booleans())
def test_decide_returns_the_incoming_response_or_none(current: Response, incoming: Response,
                                                      crash: bool) -> None:
    assert decide(current, incoming, crash_unknown=crash) in (incoming, None)
