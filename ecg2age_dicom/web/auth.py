"""Who is logged in to the console, and what they may do.

A login lives in a session cookie signed with the service's secret key (Starlette's
``SessionMiddleware``, itsdangerous): HttpOnly, SameSite=Strict, Secure under ``[web.tls]``,
valid ``[web] session_hours``. It holds the user's name and a CSRF token, nothing else; each
request looks the user up again, so that a removed user is logged out at once and a changed
role applies at once. Every POST carries the session's CSRF token in a form field
(:func:`check_csrf`). ``/metrics`` also takes HTTP Basic with a user's password, for a
Prometheus scraper (:func:`basic_user`), under the same lockout as the form.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from urllib.parse import quote

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom.store.models import Role, User
from ecg2age_dicom.users import LockoutPolicy, LoginRefused, authenticate

CSRF_FIELD = "csrf"


class LoginRequired(Exception):
    """No valid login: an HTML page answers with a redirect to the login form."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Forbidden(Exception):
    """Logged in, but not allowed (a viewer asking for what only an admin may do)."""


def secret_key(path: Path) -> str:
    """The key that signs session cookies: read from ``path``, or made there (32 random bytes
    as hex, mode 0600) when the file does not exist yet."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use: the login form has one too)."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


async def check_csrf(request: Request) -> None:
    """Raise :class:`Forbidden` unless the form's CSRF token is the session's."""
    form = await request.form()
    sent, expected = form.get(CSRF_FIELD), request.session.get(CSRF_FIELD)
    if not (
        isinstance(sent, str)
        and isinstance(expected, str)
        and secrets.compare_digest(sent.encode(), expected.encode())
    ):
        raise Forbidden("the form's CSRF token is missing or not this session's")


def log_in(request: Request, user: User) -> None:
    """Start a new session for ``user`` (a fresh CSRF token: none from before the login)."""
    request.session.clear()
    request.session["user"] = user.name
    csrf_token(request)


def log_out(request: Request) -> None:
    request.session.clear()


def local_path(target: str | None) -> str:
    """Where to go after the login: a path on this site only (never ``//host`` or a URL)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def current_user(request: Request, sessions: sessionmaker[Session]) -> User:
    """The logged-in user, or :class:`LoginRequired`."""
    name = request.session.get("user")
    if isinstance(name, str):
        with sessions() as session:
            user = session.scalar(select(User).where(User.name == name))
        if user is not None:
            return user
        request.session.clear()
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequired("/login?next=" + quote(wanted, safe=""))


def require_admin(user: User) -> None:
    if user.role != Role.ADMIN:
        raise Forbidden("only an admin may do this")


def basic_user(
    request: Request, sessions: sessionmaker[Session], policy: LockoutPolicy
) -> User | None:
    """The user of an ``Authorization: Basic`` header whose password is right, else None."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    with sessions.begin() as session:
        user = authenticate(session, name, password, policy, via="basic")
        if isinstance(user, LoginRefused):
            return None
        session.expunge(user)
    return user
