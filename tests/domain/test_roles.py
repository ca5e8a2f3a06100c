"""The permission table: every role against every action."""

from __future__ import annotations

import pytest

from app.domain import roles
from app.domain.roles import Role, can, parse_role, refusal

# action: (admin, editor, viewer)
GRID = {
    "read": (True, True, True),
    "export": (True, True, True),
    "contacts.edit": (True, True, False),
    "contacts.import": (True, True, False),
    "mailings.edit": (True, True, False),
    "mailings.send": (True, True, False),
    "mailings.schedule": (True, True, False),
    "mailings.cancel": (True, True, False),
    "mailings.resume": (True, True, False),
    "mailings.copy": (True, True, False),
    "mailings.delete": (True, True, False),
    "mailings.one_off": (True, True, False),
    "settings.read": (True, False, False),
    "settings.edit": (True, False, False),
    "users.manage": (True, False, False),
    "audit.read": (True, False, False),
    "webhooks.manage": (True, False, False),
    "api_tokens.manage": (True, False, False),
}


def test_the_grid_names_every_action() -> None:
    assert set(GRID) == set(roles.ALL_ACTIONS)


@pytest.mark.parametrize("action", sorted(GRID))
@pytest.mark.parametrize("column,role", [(0, "admin"), (1, "editor"), (2, "viewer")])
def test_grid(action: str, column: int, role: str) -> None:
    assert can(role, action) is GRID[action][column]


@pytest.mark.parametrize("action", sorted(GRID))
def test_staff_of_earlier_versions_is_an_editor(action: str) -> None:
    assert can("staff", action) is GRID[action][1]


@pytest.mark.parametrize("role", [None, "", "root", "Admin ", "superuser"])
def test_unknown_roles_may_do_nothing(role: str | None) -> None:
    expected = role is not None and role.strip().lower() == "admin"
    assert all(can(role, action) is expected for action in roles.ALL_ACTIONS)


def test_unknown_actions_are_refused_even_to_admins() -> None:
    assert can("admin", "mailings.launch_rockets") is False


def test_parse_role() -> None:
    assert parse_role("Editor") is Role.EDITOR
    assert parse_role("staff") is Role.EDITOR
    assert parse_role("nobody") is None


def test_refusals_say_why() -> None:
    assert refusal("viewer", "mailings.send") == (
        "Viewers can read but not change anything; ask an admin.")
    assert "admins" in refusal("editor", "settings.edit")
    assert refusal("editor", "users.manage") != refusal("viewer", "users.manage")
