"""DKIM names and the DNS record: what is accepted, what is refused, and the record's exact text."""

from __future__ import annotations

from datetime import date

import pytest

from app.domain.dkim import (
    DkimNameError,
    candidate_domains,
    check_key_bits,
    default_selector,
    normalize_domain,
    normalize_selector,
    record_name,
    record_strings,
    record_value,
    zone_line,
)


@pytest.mark.parametrize("raw,expected", [
    ("example.org", "example.org"),
    ("  Example.ORG. ", "example.org"),
    ("news@Shop.Example", "shop.example"),
    ("mail.sub-domain.example.co.uk", "mail.sub-domain.example.co.uk"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_domains_are_normalized(raw, expected):
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize("raw", [
    "", "   ", "localhost", "example", "-bad.example", "bad-.example", "exa mple.org", "ex_ample.org",
    "example..org", "a" * 64 + ".org", ("a" * 60 + ".") * 5 + "org", "example.123", "exa<mple>.org",
    "example.org/../x", "\u0000.org",
])
def test_bad_domains_are_refused_with_a_reason(raw):
    with pytest.raises(DkimNameError) as info:
        normalize_domain(raw)
    assert "domain" in str(info.value)


@pytest.mark.parametrize("raw,expected", [
    ("sb202611", "sb202611"), (" S1 ", "s1"), ("mail-2026", "mail-2026"), ("eu.s1", "eu.s1"),
])
def test_selectors(raw, expected):
    assert normalize_selector(raw, "example.org") == expected


@pytest.mark.parametrize("raw", ["", "s_1", "s 1", "-s", "s-", "s..1", "s\"1", "s;1", "a" * 64])
def test_bad_selectors_are_refused(raw):
    with pytest.raises(DkimNameError):
        normalize_selector(raw, "example.org")


def test_a_selector_too_long_for_the_domain_is_refused():
    domain = ".".join(["d" * 60] * 3) + ".org"  # 187 characters
    assert normalize_selector("s" * 40, domain)
    with pytest.raises(DkimNameError, match="too long"):
        normalize_selector(".".join(["s" * 40] * 2), domain)


def test_default_selector_names_the_month():
    assert default_selector(date(2026, 3, 9)) == "sb202603"


def test_record_name_and_value():
    assert record_name("sb1", "example.org") == "sb1._domainkey.example.org"
    assert record_value("MIIB\nIjAN+/A=") == "v=DKIM1; k=rsa; p=MIIBIjAN+/A="
    with pytest.raises(ValueError):
        record_value('abc"; k=ed25519')


def test_long_records_are_split_into_255_character_strings_for_zone_files():
    value = "v=DKIM1; k=rsa; p=" + "A" * 392  # the length of a 2048-bit key's record
    parts = record_strings(value)
    assert [len(p) for p in parts] == [255, 155] and "".join(parts) == value
    assert zone_line("sb1", "example.org", value) == (
        f'sb1._domainkey.example.org. IN TXT ( "{parts[0]}" "{parts[1]}" )'
    )
    assert record_strings("short") == ["short"]


def test_candidate_domains_go_from_the_domain_up_to_two_labels():
    assert candidate_domains("news.shop.example") == ["news.shop.example", "shop.example"]
    assert candidate_domains("shop.example") == ["shop.example"]
    assert candidate_domains("localhost") == []


@pytest.mark.parametrize("bits,ok", [(512, False), (1023, False), (1024, True), (2048, True),
                                     (4096, True), (8192, False)])
def test_key_sizes(bits, ok):
    if ok:
        check_key_bits(bits)
    else:
        with pytest.raises(ValueError, match="1024 to 4096 bits"):
            check_key_bits(bits)
