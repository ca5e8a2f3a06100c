"""Staff users: creation, authentication, roles, passwords and deactivation."""

from __future__ import annotations

import secrets
from functools import lru_cache

from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from app.domain.roles import Role, parse_role
from app.extensions import db
from app.models import User

ROLES = tuple(r.value for r in Role)


class UserError(ValueError):
    """A user could not be created or changed; the message says why."""


def _role(role: str) -> str:
    parsed = parse_role(role)
    if parsed is None:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    return parsed.value


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise UserError("the password must have at least 8 characters")
    if len(password) > 200:
        raise UserError("the password must have at most 200 characters")


def create_user(*, email: str, password: str, name: str = "", role: str = "editor") -> User:
    """Create a user with a hashed password; emails are unique, case-insensitively."""
    email = email.strip()
    if "@" not in email:
        raise UserError(f"{email!r} is not an email address")
    _check_password(password)
    role = _role(role)
    if find_user(email) is not None:
        raise UserError(f"a user with the email {email} exists already")
    user = User(email=email, name=name, role=role)
    user.set_password(password)
    user.new_session_stamp()
    db.session.add(user)
    db.session.flush()
    return user


def find_user(email: str) -> User | None:
    stmt = select(User).where(func.lower(User.email) == email.strip().lower())
    return db.session.execute(stmt).scalar_one_or_none()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash of nothing anyone knows, checked for unknown addresses so they take as long."""
    return generate_password_hash(secrets.token_hex(16))


def authenticate(email: str, password: str) -> User | None:
    """The active user with this email and password, or None.

    The password hash runs whether or not the address is known, so the answer takes as long
    for an unknown address as for a wrong password.
    """
    user = find_user(email)
    ok = check_password_hash(user.password_hash if user is not None else _dummy_hash(), password)
    if user is None or not ok or not user.active:
        return None
    return user


def list_users() -> list[User]:
    return list(db.session.execute(select(User).order_by(User.email)).scalars())


def get_user(user_id: int) -> User | None:
    return db.session.get(User, user_id)


def _active_admins() -> int:
    stmt = select(func.count()).select_from(User).where(User.role == Role.ADMIN.value,
                                                        User.active.is_(True))
    return int(db.session.execute(stmt).scalar_one())


def _keep_an_admin(user: User) -> None:
    if user.role == Role.ADMIN.value and user.active and _active_admins() <= 1:
        raise UserError(f"{user.email} is the last active admin; make another admin first")


def update_user(user: User, *, name: str, role: str) -> list[str]:
    """Change name and role; a new role ends the user's sessions. Returns what changed."""
    role = _role(role)
    changed = []
    if role != user.role:
        if role != Role.ADMIN.value:
            _keep_an_admin(user)
        changed.append(f"role {user.role} → {role}")
        user.role = role
        user.new_session_stamp()
    name = name.strip()[:200]
    if name != user.name:
        changed.append("name")
        user.name = name
    return changed


def set_password(user: User, password: str | None = None) -> str:
    """Set `password` (or a generated one, returned); every session of the user ends."""
    if password is None:
        password = secrets.token_urlsafe(12)
    _check_password(password)
    user.set_password(password)
    user.new_session_stamp()
    return password


def set_active(user: User, active: bool) -> None:
    """Deactivate (ending every session at once) or reactivate a user."""
    if not active:
        _keep_an_admin(user)
    user.active = active
    user.new_session_stamp()


def end_sessions(user: User) -> None:
    """Sign the user out everywhere: on sign-out, every copy of the session cookie stops working."""
    user.new_session_stamp()
