"""The moves an action allows, as the sending engine's conditional UPDATEs read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.domain.lifecycle import Action, Status, moves_of, transition

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_the_engine_moves() -> None:
    assert moves_of(Action.INTERRUPT) == {Status.PREPARING: Status.INTERRUPTED,
                                          Status.SENDING: Status.INTERRUPTED}
    assert moves_of(Action.FINISH) == {Status.SENDING: Status.SENT}
    assert moves_of(Action.START) == {Status.SCHEDULED: Status.PREPARING}
    assert moves_of(Action.CANCEL) == {Status.SCHEDULED: Status.DRAFT,
                                       Status.PREPARING: Status.CANCELED,
                                       Status.SENDING: Status.CANCELED,
                                       Status.INTERRUPTED: Status.CANCELED}


def test_every_move_is_one_transition_allows() -> None:
    for action in Action:
        for source, target in moves_of(action).items():
            send_at = None
            if source is Status.SCHEDULED:  # due for Start, outside the lock window otherwise
                send_at = NOW if action is Action.START else NOW + timedelta(days=1)
            assert transition(source, action, now=NOW, send_at=send_at) is target
        for status in set(Status) - set(moves_of(action)):
            try:
                transition(status, action, now=NOW, send_at=NOW + timedelta(days=1))
            except ValueError:
                continue
            raise AssertionError(f"{action} from {status} is allowed but not in moves_of")
