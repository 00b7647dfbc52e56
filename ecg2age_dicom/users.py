"""Users of the web console: a name, a role (admin or viewer) and an argon2id hash of the
password (argon2-cffi's recommended parameters). The password itself is never stored, shown
or logged. Adding and removing a user is audited (:mod:`ecg2age_dicom.store.audit`).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecg2age_dicom.errors import Ecg2AgeError
from ecg2age_dicom.store import audit
from ecg2age_dicom.store.models import Role, User

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_LENGTH = 12
_HASHER = PasswordHasher()


class UserError(Ecg2AgeError):
    """A user name, role or password that cannot be used (the reason says which)."""


def add_user(session: Session, name: str, role: str, password: str, actor: str) -> User:
    """Add a user (in the caller's transaction).

    Raises
    ------
    UserError
        The name is not a plain login name, it exists, the role is unknown or the password is
        shorter than :data:`MIN_PASSWORD_LENGTH`.
    """
    if not NAME.fullmatch(name):
        raise UserError(f"user names are 1-64 letters, digits and . _ @ -, not {name!r}")
    try:
        chosen = Role(role)
    except ValueError:
        raise UserError(f"role must be one of {[r.value for r in Role]}") from None
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise UserError(f"user {name!r} exists already")
    user = User(
        name=name,
        role=chosen,
        password_hash=_HASHER.hash(password),
        created_at=datetime.now(timezone.utc),
    )
    session.add(user)
    audit.record(session, actor, "user_add", f"user={name} role={chosen.value}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def remove_user(session: Session, name: str, actor: str) -> None:
    """Remove a user (in the caller's transaction).

    Raises
    ------
    UserError
        There is no such user.
    """
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserError(f"no user {name!r}")
    session.delete(user)
    audit.record(session, actor, "user_remove", f"user={name} role={user.role.value}")


def password_matches(user: User, password: str) -> bool:
    """Whether ``password`` is the user's (constant-time, argon2's own check)."""
    try:
        return _HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
