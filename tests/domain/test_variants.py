"""A/B rules (docs/ARCHITECTURE.md): an exact, stable random split and the winner by human rate."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.variants import (
    VariantError,
    VariantFigures,
    check_setup,
    count_tested,
    group_sizes,
    split,
    winner,
)


def test_test_size_rounds_down_and_groups_differ_by_at_most_one():
    assert count_tested(1000, 20) == 200
    assert count_tested(999, 20) == 199  # 199.8 rounded down
    assert count_tested(7, 100) == 7 and count_tested(7, 0) == 0
    assert group_sizes(200, 3) == [67, 67, 66]
    assert group_sizes(10, 4) == [3, 3, 2, 2]
    assert group_sizes(0, 2) == [0, 0]


def test_split_is_exact_for_a_thousand_recipients():
    groups, rest = split(range(1, 1001), seed="mailing-7", share=20, variant_count=4)
    assert [len(g) for g in groups] == [50, 50, 50, 50]
    assert len(rest) == 800
    everyone = [k for g in groups for k in g] + rest
    assert sorted(everyone) == list(range(1, 1001))  # each in exactly one place


def test_split_is_stable_whatever_the_order_and_differs_between_mailings():
    keys = list(range(500))
    first = split(keys, seed="mailing-1", share=30, variant_count=2)
    again = split(reversed(keys), seed="mailing-1", share=30, variant_count=2)
    assert first == again
    other = split(keys, seed="mailing-2", share=30, variant_count=2)
    assert other[0] != first[0]


def test_split_is_not_the_first_keys_in_order():
    groups, _ = split(range(10_000), seed="mailing-3", share=10, variant_count=2)
    # A random slice of 500 from 0..9999 has its mean near 5000, not near 250.
    for group in groups:
        assert 4000 < sum(group) / len(group) < 6000


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=10**9), max_size=300),
       st.integers(min_value=0, max_value=100), st.integers(min_value=2, max_value=4))
def test_split_property_every_key_in_exactly_one_group(keys, share, count):
    groups, rest = split(keys, seed="s", share=share, variant_count=count)
    seen = Counter(k for g in groups for k in g) + Counter(rest)
    assert set(seen) == keys and all(n == 1 for n in seen.values())
    sizes = [len(g) for g in groups]
    assert sum(sizes) == len(keys) * share // 100
    assert max(sizes) - min(sizes) <= 1


def test_winner_by_human_open_rate_ignoring_machine_opens():
    # B had more opens in all, but most were machine opens, which VariantFigures never carries.
    a = VariantFigures(0, sent=100, opened=30, clicked=2)
    b = VariantFigures(1, sent=100, opened=25, clicked=9)
    assert winner([a, b], "open") == 0
    assert winner([a, b], "click") == 1


def test_winner_compares_rates_not_counts():
    a = VariantFigures(0, sent=200, opened=40, clicked=0)  # 20%
    b = VariantFigures(1, sent=100, opened=21, clicked=0)  # 21%
    assert winner([a, b], "open") == 1
    assert a.rate("open") == Fraction(1, 5)


def test_tie_goes_to_more_openers_then_to_the_earlier_variant():
    a = VariantFigures(0, sent=100, opened=20, clicked=0)
    b = VariantFigures(1, sent=200, opened=40, clicked=0)  # same 20%, more openers
    assert winner([a, b], "open") == 1
    c = VariantFigures(2, sent=100, opened=20, clicked=0)
    assert winner([c, a], "open") == 0  # exact tie: A before C
    nothing = [VariantFigures(0, 0, 0, 0), VariantFigures(1, 0, 0, 0)]
    assert winner(nothing, "click") == 0


@pytest.mark.parametrize(("count", "share", "wait", "metric", "message"), [
    (1, 20, 60, "open", "2 to 4 variants"),
    (5, 20, 60, "open", "2 to 4 variants"),
    (2, 0, 60, "open", "between 1% and 100%"),
    (2, 101, 60, "open", "between 1% and 100%"),
    (2, 20, 50_000, "open", "30 days"),
    (2, 20, 60, "revenue", "open rate or click rate"),
])
def test_setup_refusals(count, share, wait, metric, message):
    with pytest.raises(VariantError, match=message):
        check_setup(count, share, wait, metric)
    check_setup(2, 20, 60, "click")  # a good one passes
