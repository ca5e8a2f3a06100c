"""The bulk token reader of the webhooks gives exactly the answers of the signed-token service."""

from __future__ import annotations

import pytest

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
