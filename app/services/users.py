"""Staff users: creation and authentication."""

from __future__ import annotations

from sqlalchemy import func, select

from app.extensions import db
from app.models import User

ROLES = ("staff", "admin")


class UserError(ValueError):
    """A user could not be created; the message says why."""


def create_user(*, email: str, password: str, name: str = "", role: str = "staff") -> User:
    """Create a staff user with a hashed password; emails are unique, case-insensitively."""
    email = email.strip()
    if "@" not in email:
        raise UserError(f"{email!r} is not an email address")
    if len(password) < 8:
        raise UserError("the password must have at least 8 characters")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if find_user(email) is not None:
        raise UserError(f"a user with the email {email} exists already")
    user = User(email=email, name=name, role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def find_user(email: str) -> User | None:
    stmt = select(User).where(func.lower(User.email) == email.strip().lower())
    return db.session.execute(stmt).scalar_one_or_none()


def authenticate(email: str, password: str) -> User | None:
    """The active user with this email and password, or None."""
    user = find_user(email)
    if user is None or not user.active or not user.check_password(password):
        return None
    return user


def list_users() -> list[User]:
    return list(db.session.execute(select(User).order_by(User.email)).scalars())
