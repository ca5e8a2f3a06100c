"""Segment rules: what parses, what is refused (with the condition named), and the words."""

from __future__ import annotations

import pytest

from app.domain.segments import MAX_CONDITIONS, Condition, SegmentError, describe, operators, parse


def rule(*conditions: dict, match: str = "all") -> dict:
    return {"match": match, "conditions": list(conditions)}


def test_a_rule_round_trips_through_its_stored_form():
    stored = rule({"subject": "email", "op": "ends_with", "value": " @example.org "},
                  {"subject": "field", "key": " city ", "op": "equals", "value": "Lyon"},
                  {"subject": "last_transaction", "op": "within_days", "value": "365"},
                  {"subject": "last_transaction", "op": "never", "value": "ignored"},
                  {"subject": "list", "op": "in_list", "value": "3"}, match="any")
    parsed = parse(stored)
    assert parsed.match == "any"
    assert parsed.conditions == (
        Condition("email", "ends_with", "@example.org"),
        Condition("field", "equals", "Lyon", key="city"),
        Condition("last_transaction", "within_days", 365),
        Condition("last_transaction", "never"),
        Condition("list", "in_list", 3),
    )
    assert parse(parsed.to_json()) == parsed
    assert parsed.list_ids() == {3}


@pytest.mark.parametrize(("data", "message"), [
    (None, "an object"),
    (rule(), "at least one condition"),
    ({"match": "some", "conditions": [{"subject": "name", "op": "is_set"}]}, "'all' or 'any'"),
    (rule(*[{"subject": "name", "op": "is_set"}] * (MAX_CONDITIONS + 1)), "at most 20"),
    (rule("name"), "condition 1: expected an object"),
    (rule({"subject": "age", "op": "equals", "value": "3"}), "condition 1: choose what"),
    (rule({"subject": "name", "op": "is_set"}, {"subject": "name", "op": "within_days",
                                                  "value": 3}),
     "condition 2: name cannot be compared"),
    (rule({"subject": "created", "op": "never"}), "added cannot be compared"),
    (rule({"subject": "field", "op": "equals", "value": "x"}), "name the custom field"),
    (rule({"subject": "field", "key": "k" * 101, "op": "is_set"}), "name the custom field"),
    (rule({"subject": "email", "op": "contains", "value": "  "}), "give a value"),
    (rule({"subject": "email", "op": "contains", "value": "x" * 201}), "at most 200"),
    (rule({"subject": "created", "op": "within_days", "value": 0}), "between 1 and"),
    (rule({"subject": "created", "op": "within_days", "value": "ten"}), "number of days"),
    (rule({"subject": "created", "op": "within_days", "value": True}), "number of days"),
    (rule({"subject": "list", "op": "in_list", "value": ""}), "choose a list"),
    (rule({"subject": "list", "op": "in_list", "value": -2}), "choose a list"),
])
def test_refusals_say_which_condition_and_why(data, message):
    with pytest.raises(SegmentError, match=message):
        parse(data)


def test_every_subject_has_operators_and_words():
    assert set(operators("list")) == {"in_list", "not_in_list"}
    assert "never" in operators("last_transaction") and "never" not in operators("created")
    assert operators("nothing") == {}
    assert describe(parse(rule({"subject": "name", "op": "is_not_set"}))) == "name is empty"
    words = describe(parse(rule(
        {"subject": "email", "op": "ends_with", "value": "@shop.test"},
        {"subject": "created", "op": "before_days", "value": 30},
        {"subject": "list", "op": "not_in_list", "value": 4}, match="any")), {4: "VIP"})
    assert words == ("any of: email address ends with '@shop.test'; added more than 30 days ago;"
                     " is not in list 'VIP'")
