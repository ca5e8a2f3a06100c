"""The recipient token made for each message is exactly the serializer's own token."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.tokens import _serializer, read_recipient_token, recipient_token

SECRETS = ["dev-secret", "ünïcödé key", "x" * 200]


@settings(max_examples=300, deadline=None)
@given(recipient_id=st.integers(min_value=0, max_value=2**63 - 1), secret=st.sampled_from(SECRETS))
def test_same_token_as_the_serializer(recipient_id, secret):
    token = recipient_token(recipient_id, secret)
    assert token == _serializer(secret).dumps(recipient_id)
    assert read_recipient_token(token, secret) == recipient_id


def test_each_secret_signs_its_own_tokens():
    one, two = recipient_token(42, SECRETS[0]), recipient_token(42, SECRETS[1])
    assert one != two
    assert read_recipient_token(one, SECRETS[1]) is None
    assert read_recipient_token(one, SECRETS[0]) == 42


def test_ids_around_the_length_where_compression_starts_to_pay():
    for digits in range(8, 14):
        for id_ in (int("1" * digits), int("9" * digits), 10 ** (digits - 1), int("62" + "9" * (digits - 2))):
            assert recipient_token(id_, "k") == _serializer("k").dumps(id_)
