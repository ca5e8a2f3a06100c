"""Staff roles and what each may do: a pure table, checked by every screen that changes something.

Admin does everything, Editor works on contacts and mailings, Viewer reads and exports. See
docs/ARCHITECTURE.md for the layers.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"


ROLE_LABELS: dict[str, str] = {
    Role.ADMIN.value: "Admin",
    Role.EDITOR.value: "Editor",
    Role.VIEWER.value: "Viewer",
}

# Roles of earlier versions and what they are now.
LEGACY_ROLES: dict[str, Role] = {"staff": Role.EDITOR}

READ_ACTIONS = frozenset({
    "read",          # every page that only shows data
    "export",        # CSV exports
})

EDITOR_ACTIONS = frozenset({
    "contacts.edit",     # flags, email types, transactions, lists, segments
    "contacts.import",
    "mailings.edit",     # create, edit content, add steps, set the owner
    "mailings.send",     # send now, test send
    "mailings.schedule",  # schedule, unschedule
    "mailings.cancel",
    "mailings.resume",
    "mailings.copy",
    "mailings.delete",
    "mailings.one_off",
})

ADMIN_ACTIONS = frozenset({
    "settings.edit",     # sending settings, providers, email types, DKIM keys
    "settings.read",
    "users.manage",
    "audit.read",
    "webhooks.manage",   # outbound webhook endpoints, their deliveries and secrets
    "api_tokens.manage",  # API tokens: create (shown once), revoke
})

ALL_ACTIONS = READ_ACTIONS | EDITOR_ACTIONS | ADMIN_ACTIONS

PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.ADMIN: ALL_ACTIONS,
    Role.EDITOR: READ_ACTIONS | EDITOR_ACTIONS,
    Role.VIEWER: READ_ACTIONS,
}


def parse_role(value: str | None) -> Role | None:
    """The role named by `value` (legacy names mapped), or None for anything unknown."""
    if value is None:
        return None
    key = value.strip().lower()
    if key in LEGACY_ROLES:
        return LEGACY_ROLES[key]
    try:
        return Role(key)
    except ValueError:
        return None


def can(role: str | None, action: str) -> bool:
    """Whether a user of `role` may do `action`; unknown roles and actions may do nothing."""
    parsed = parse_role(role)
    if parsed is None or action not in ALL_ACTIONS:
        return False
    return action in PERMISSIONS[parsed]


def refusal(role: str | None, action: str) -> str:
    """Why `role` may not do `action`, in words for the person refused."""
    parsed = parse_role(role)
    if parsed is Role.VIEWER:
        return "Viewers can read but not change anything; ask an admin."
    if parsed is Role.EDITOR:
        return ("Editors work on contacts and mailings; settings, users and the audit log "
                "are for admins: ask an admin.")
    return "Your account may not do this; ask an admin."
