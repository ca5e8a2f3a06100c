"""The bulk token reader of the webhooks gives exactly the answers of the signed-token service."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.services.tokens import read_recipient_token, recipient_token
from app.webhooks.tokens import read_token


@pytest.mark.parametrize("recipient_id", [1, 42, 123456, 99_999_999])
def test_valid_and_tampered_tokens(app, recipient_id):
    token = recipient_token(recipient_id)
    assert read_token(token) == recipient_id == read_recipient_token(token)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert read_token(tampered) is None and read_recipient_token(tampered) is None
    assert read_token(token) == recipient_id  # remembered, still right


@pytest.mark.parametrize("junk", ["", "abc", "a.b", ".", "x" * 150, "x" * 201, "IjEi.zzz",
                                  "é.é", "MQ.=="])
def test_garbage_is_refused(app, junk):
    assert read_token(junk) is None
    assert read_token(recipient_token(5) + "x") is None


def test_a_token_of_another_secret_is_refused(app):
    token = recipient_token(7, secret="another secret")
    assert read_token(token) is None


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=$+/ "


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the app is only read
@given(recipient_id=st.integers(min_value=0, max_value=2**63 - 1),
       position=st.integers(min_value=0, max_value=60), char=st.sampled_from(ALPHABET))
def test_same_answer_as_the_token_service_for_any_id_and_any_changed_character(
        app, recipient_id, position, char):
    token = recipient_token(recipient_id)
    assert read_token(token) == recipient_id
    changed = token[:position] + char + token[position + 1:]
    assert read_token(changed) == read_recipient_token(changed)


@pytest.mark.parametrize("payload", ["hello", 1.5, True, [1], {"id": 1}, -3, "007"])
def test_payloads_that_are_not_recipient_ids_are_refused(app, payload):
    """A correctly signed token that does not carry a plain id (as another feature of the same
    secret and salt could sign) reads as nothing, not as a recipient."""
    from app.services.tokens import _serializer

    token = str(_serializer(app.config["SECRET_KEY"]).dumps(payload))
    expected = payload if isinstance(payload, int) and not isinstance(payload, bool) else None
    assert read_token(token) == expected == read_recipient_token(token)
