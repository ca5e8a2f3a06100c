"""Eligibility (docs/ARCHITECTURE.md, "Mailing lifecycle"): address checks and the priority of the not-sent rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.eligibility import (
    DEFAULT_INACTIVITY,
    ContactFacts,
    address_key,
    address_problem,
    check,
    is_inactive,
    is_valid_address,
    normalize_address,
)
from app.domain.responses import Response

LOCAL_64 = "l" * 64
DOMAIN_189 = f"{'a' * 63}.{'b' * 63}.{'c' * 57}.com"  # 254 - 64 - 1
assert len(f"{LOCAL_64}@{DOMAIN_189}") == 254

VALID = [
    "jane@example.com",
    "Jane.Doe@Example.COM",
    "jane.doe@example.co.uk",
    "jane+newsletter@example.org",
    "o'brien@example.ie",
    "first_last@example.net",
    "user-name@example.io",
    "a@b.cz",
    "x@mail.sub.example.museum",
    "!#$%&'*+/=?^_`{|}~-@example.org",
    "1234567890@example.com",
    "user@123.example.com",
    "user@ex-ample.com",
    "user@ex--ample.com",
    "user@xn--bcher-kva.de",  # bücher.de in ASCII form
    "user@bücher.de",  # IDN, encoded to xn-- before checking
    "user@пример.рф",  # Cyrillic domain and TLD
    "user@例え.テスト",  # Japanese domain and TLD
    "user@xn--e1afmkfd.xn--p1ai",
    "  padded@example.com  ",  # surrounding whitespace is trimmed
    f"{LOCAL_64}@example.com",  # local part of exactly 64
    f"user@{'d' * 63}.com",  # a label of exactly 63
    f"{LOCAL_64}@{DOMAIN_189}",  # exactly 254
    "user@example.technology",
]

INVALID: list[tuple[str, str]] = [
    ("", "empty"),
    ("   ", "empty"),
    ("jane", "exactly one @"),
    ("jane.example.com", "exactly one @"),
    ("jane@@example.com", "exactly one @"),
    ("jane@doe@example.com", "exactly one @"),
    ('"jane@doe"@example.com', "exactly one @"),
    ("@example.com", "before @ is empty"),
    ("jane@", "domain is missing"),
    (f"{'l' * 65}@example.com", "longer than 64"),
    (f"{LOCAL_64}@{DOMAIN_189[:-4]}x.com", "longer than 254"),
    ("x" * 300, "longer than 254"),
    (".jane@example.com", "misplaced dot"),
    ("jane.@example.com", "misplaced dot"),
    ("ja..ne@example.com", "misplaced dot"),
    ('"jane doe"@example.com', "not allowed"),  # quoted strings are refused
    ('"jane"@example.com', "not allowed"),
    ("jane doe@example.com", "not allowed"),
    ("jane,doe@example.com", "not allowed"),
    ("jane(comment)@example.com", "not allowed"),
    ("jane\\doe@example.com", "not allowed"),
    ("jane<doe>@example.com", "not allowed"),
    ("jürgen@example.de", "not allowed"),  # a non-ASCII local part is not accepted
    ("jane@localhost", "no dot"),  # no TLD
    ("jane@example", "no dot"),
    ("jane@example..com", "label"),
    ("jane@.example.com", "label"),
    ("jane@-example.com", "label"),
    ("jane@example-.com", "label"),
    ("jane@exa_mple.com", "label"),
    ("jane@exa mple.com", "label"),
    (f"jane@{'d' * 64}.com", "label"),  # a label of 64
    ("jane@[192.168.0.1]", "label"),  # address literals are refused
    ("jane@example.123", "top-level domain"),  # numeric TLD
    ("jane@192.168.0.1", "top-level domain"),
    ("jane@example.c", "top-level domain"),  # one-letter TLD
    ("jane@example.c0m", "top-level domain"),
    ("jane@example.co-m", "top-level domain"),
    ("jane@xn--.com", "label"),
    ("jane@example.com,bob@example.com", "exactly one @"),
]


def test_there_are_at_least_forty_address_cases() -> None:
    assert len(VALID) + len(INVALID) >= 40


@pytest.mark.parametrize("address", VALID)
def test_valid_addresses(address: str) -> None:
    assert address_problem(address) is None
    assert is_valid_address(address)


@pytest.mark.parametrize(("address", "reason"), INVALID)
def test_invalid_addresses(address: str, reason: str) -> None:
    problem = address_problem(address)
    assert problem is not None and reason in problem, problem
    assert not is_valid_address(address)


@pytest.mark.parametrize(("raw", "normal"), [
    ("Jane.Doe@Example.COM", "Jane.Doe@example.com"),
    ("  jane@EXAMPLE.org\n", "jane@example.org"),
    ("jane@example.com", "jane@example.com"),
    ("not an address", "not an address"),
    (" x ", "x"),
])
def test_normalize_address_lowercases_only_the_domain(raw: str, normal: str) -> None:
    assert normalize_address(raw) == normal


@pytest.mark.parametrize(("a", "b"), [
    ("Jane.Doe@Example.com", "jane.doe@example.COM"),
    (" jane@example.com", "JANE@EXAMPLE.COM  "),
])
def test_address_key_compares_case_insensitively(a: str, b: str) -> None:
    assert address_key(a) == address_key(b)


def test_address_key_keeps_distinct_addresses_apart() -> None:
    assert address_key("jane@example.com") != address_key("jane+x@example.com")


@settings(max_examples=150, deadline=None)
@given(st.emails())
def test_generated_addresses_are_handled(address: str) -> None:
    # Never raises; the key and the normalised form agree about identity.
    address_problem(address)
    assert address_key(normalize_address(address)) == address_key(address)


# --- the rules and their priority ------------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RECENT = NOW - timedelta(days=30)
LONG_AGO = NOW - timedelta(days=1000)
NEWSLETTER = 7


def facts(*, address: str = "jane@example.com", do_not_email: bool = False, valid: bool = True,
          opted_out: frozenset[int] = frozenset(), last: datetime | None = RECENT,
          created: datetime = LONG_AGO) -> ContactFacts:
    return ContactFacts(address=address, do_not_email=do_not_email, valid=valid,
                        opted_out_types=opted_out, last_transaction=last, created=created)


def test_an_eligible_contact() -> None:
    assert check(facts(), email_type=NEWSLETTER, now=NOW) is None


@pytest.mark.parametrize(("contact", "kwargs", "expected"), [
    (facts(), {"duplicate": True}, Response.DUPLICATE),
    (facts(do_not_email=True), {}, Response.DO_NOT_EMAIL),
    (facts(opted_out=frozenset({NEWSLETTER})), {}, Response.TYPE_UNSUBSCRIBED),
    (facts(opted_out=frozenset({NEWSLETTER + 1})), {}, None),
    (facts(valid=False), {}, Response.INVALID_ADDRESS),
    (facts(address="jane@localhost"), {}, Response.INVALID_ADDRESS),  # rechecked, not only the flag
    (facts(last=LONG_AGO), {}, Response.INACTIVE),
])
def test_each_rule_alone(contact: ContactFacts, kwargs: dict[str, bool], expected: Response | None) -> None:
    assert check(contact, email_type=NEWSLETTER, now=NOW, **kwargs) is expected


def test_without_an_email_type_no_type_unsubscribe_applies() -> None:
    assert check(facts(opted_out=frozenset({NEWSLETTER})), email_type=None, now=NOW) is None


PRIORITY = [Response.DUPLICATE, Response.DO_NOT_EMAIL, Response.TYPE_UNSUBSCRIBED,
            Response.INVALID_ADDRESS, Response.INACTIVE]


@settings(max_examples=200, deadline=None)
@given(duplicate=st.booleans(), do_not_email=st.booleans(), type_out=st.booleans(),
       invalid_flag=st.booleans(), invalid_syntax=st.booleans(), inactive=st.booleans(),
       other_types=st.frozensets(st.integers(min_value=100, max_value=120), max_size=3))
def test_the_highest_priority_rule_that_applies_wins(duplicate: bool, do_not_email: bool, type_out: bool,
                                                     invalid_flag: bool, invalid_syntax: bool,
                                                     inactive: bool, other_types: frozenset[int]) -> None:
    contact = facts(
        address="jane@@example" if invalid_syntax else "jane@example.com",
        do_not_email=do_not_email, valid=not invalid_flag,
        opted_out=other_types | ({NEWSLETTER} if type_out else set()),
        last=LONG_AGO if inactive else RECENT,
    )
    applies = {
        Response.DUPLICATE: duplicate, Response.DO_NOT_EMAIL: do_not_email,
        Response.TYPE_UNSUBSCRIBED: type_out, Response.INVALID_ADDRESS: invalid_flag or invalid_syntax,
        Response.INACTIVE: inactive,
    }
    expected = next((rule for rule in PRIORITY if applies[rule]), None)
    assert check(contact, email_type=NEWSLETTER, now=NOW, duplicate=duplicate) is expected


# --- inactivity ------------------------------------------------------------------------------

def test_default_inactivity_is_two_years() -> None:
    assert DEFAULT_INACTIVITY == timedelta(days=730)


@pytest.mark.parametrize(("last", "inactive"), [
    (NOW - DEFAULT_INACTIVITY, False),  # exactly two years: still active
    (NOW - DEFAULT_INACTIVITY + timedelta(seconds=1), False),
    (NOW - DEFAULT_INACTIVITY - timedelta(seconds=1), True),
    (NOW - DEFAULT_INACTIVITY - timedelta(microseconds=1), True),
    (NOW, False),
])
def test_inactivity_boundary(last: datetime, inactive: bool) -> None:
    contact = facts(last=last)
    assert is_inactive(contact, now=NOW, inactivity=DEFAULT_INACTIVITY) is inactive
    assert (check(contact, email_type=None, now=NOW) is Response.INACTIVE) is inactive


def test_a_custom_inactivity_period() -> None:
    contact = facts(last=NOW - timedelta(days=91))
    assert check(contact, email_type=None, now=NOW, inactivity=timedelta(days=90)) is Response.INACTIVE
    assert check(contact, email_type=None, now=NOW, inactivity=timedelta(days=91)) is None


@pytest.mark.parametrize("last", [None, LONG_AGO, datetime(1990, 1, 1, tzinfo=UTC)])
def test_none_disables_the_inactivity_rule(last: datetime | None) -> None:
    contact = facts(last=last, created=LONG_AGO)
    assert not is_inactive(contact, now=NOW, inactivity=None)
    assert check(contact, email_type=None, now=NOW, inactivity=None) is None


@pytest.mark.parametrize(("created", "expected"), [
    (NOW - timedelta(days=10), None),  # signed up recently, never bought: active
    (NOW - DEFAULT_INACTIVITY, None),
    (NOW - DEFAULT_INACTIVITY - timedelta(seconds=1), Response.INACTIVE),
    (LONG_AGO, Response.INACTIVE),
])
def test_the_created_date_is_used_when_there_is_no_transaction(created: datetime,
                                                                 expected: Response | None) -> None:
    assert check(facts(last=None, created=created), email_type=None, now=NOW) is expected


def test_a_new_transaction_makes_an_inactive_contact_eligible_again() -> None:
    assert check(facts(last=LONG_AGO, created=LONG_AGO), email_type=None, now=NOW) is Response.INACTIVE
    assert check(facts(last=NOW - timedelta(minutes=1), created=LONG_AGO), email_type=None, now=NOW) is None


def test_a_transaction_wins_over_an_old_created_date() -> None:
    # The last transaction, when there is one, decides; the sign-up date does not drag it back.
    assert check(facts(last=RECENT, created=datetime(2000, 1, 1, tzinfo=UTC)), email_type=None, now=NOW) is None
