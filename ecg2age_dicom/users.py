"""Users of the web console: a name, a role (admin or viewer) and an argon2id hash of the
password (argon2-cffi's recommended parameters). The password itself is never stored, shown
or logged. Adding and removing a user, each login and each failed one are audited
(:mod:`ecg2age_dicom.store.audit`).

:func:`authenticate` locks a user out after ``max_failed`` failed logins in a row, for
``lockout`` and twice as long at each further lockout (at most :data:`MAX_LOCKOUT`); an
unknown name costs the same hash as a known one, so that timing does not tell which exist.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecg2age_dicom.errors import Ecg2AgeError
from ecg2age_dicom.store import audit
from ecg2age_dicom.store.models import Role, User
from ecg2age_dicom.store.queries import aware

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_LENGTH = 12
MAX_LOCKOUT = timedelta(days=1)
_HASHER = PasswordHasher()
_UNKNOWN_USER_HASH = _HASHER.hash("an unknown user's password is checked against this")


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


@dataclass(frozen=True)
class LockoutPolicy:
    """``[web] max_failed_logins`` and ``lockout_minutes``."""

    max_failed: int
    lockout: timedelta


@dataclass(frozen=True)
class LoginRefused:
    """Why a login failed, as the person at the login form may read it."""

    reason: str


def authenticate(
    session: Session, name: str, password: str, policy: LockoutPolicy, via: str
) -> User | LoginRefused:
    """The user ``name`` when ``password`` is theirs and they are not locked out (in the
    caller's transaction, which records the attempt in the audit trail; ``via``: "form" or
    "basic")."""
    now = datetime.now(timezone.utc)
    user = session.scalar(select(User).where(User.name == name)) if NAME.fullmatch(name) else None
    shown_name = name if NAME.fullmatch(name) else "(not a user name)"
    if user is None:
        _spend_a_hash(password)
        audit.record(session, shown_name, "login_failed", f"via={via} reason=unknown user")
        return LoginRefused("wrong user name or password")
    locked_until = aware(user.locked_until) if user.locked_until else None
    if locked_until is not None and locked_until > now:
        audit.record(session, user.name, "login_refused", f"via={via} reason=locked out")
        return LoginRefused(f"too many failed logins: locked until {locked_until:%H:%M} UTC")
    if not password_matches(user, password):
        user.failed_logins += 1
        detail = f"via={via} reason=wrong password failures={user.failed_logins}"
        if user.failed_logins % policy.max_failed == 0:
            lockouts = user.failed_logins // policy.max_failed
            length = min(policy.lockout * 2 ** min(lockouts - 1, 20), MAX_LOCKOUT)
            user.locked_until = now + length
            detail += f" locked_for={int(length.total_seconds())}s"
        audit.record(session, user.name, "login_failed", detail)
        return LoginRefused("wrong user name or password")
    user.failed_logins, user.locked_until = 0, None
    audit.record(session, user.name, "login", f"via={via}")
    return user


def _spend_a_hash(password: str) -> None:
    """As much work as checking a real user's password."""
    with contextlib.suppress(VerificationError):
        _HASHER.verify(_UNKNOWN_USER_HASH, password)
