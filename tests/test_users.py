"""Users and the audit trail, on SQLite and PostgreSQL: hashes not passwords, refusals named,
and an audit trail the database itself keeps append-only."""

from __future__ import annotations

import io
import json
import sys

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DatabaseError

from ecg2age_dicom.store import audit
from ecg2age_dicom.store.models import AuditEvent, User
from ecg2age_dicom.users import UserError, add_user, list_users, password_matches, remove_user
from tests.cli_runner import run

PASSWORD = "correct horse battery"


def test_a_user_is_stored_with_an_argon2_hash_and_audited(store):
    _, sessions = store
    with sessions.begin() as session:
        add_user(session, "alice", "admin", PASSWORD, actor="cli")
    with sessions() as session:
        (user,) = list_users(session)
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        assert password_matches(user, PASSWORD) and not password_matches(user, PASSWORD + "!")
        (event,) = audit.events(session)
    assert (event.actor, event.action, event.detail) == ("cli", "user_add", "user=alice role=admin")


@pytest.mark.parametrize(
    ("name", "role", "password", "reason"),
    [
        ("bob<script>", "viewer", PASSWORD, "user names are"),
        ("bob", "root", PASSWORD, "role must be one of"),
        ("bob", "viewer", "short", "at least 12 characters"),
        ("alice", "viewer", PASSWORD, "exists already"),
    ],
)
def test_bad_users_are_refused_with_the_reason(store, name, role, password, reason):
    _, sessions = store
    with sessions.begin() as session:
        add_user(session, "alice", "admin", PASSWORD, actor="cli")
    with pytest.raises(UserError, match=reason), sessions.begin() as session:
        add_user(session, name, role, password, actor="cli")


def test_removing_a_user_is_audited_and_an_unknown_one_refused(store):
    _, sessions = store
    with sessions.begin() as session:
        add_user(session, "carol", "viewer", PASSWORD, actor="cli")
    with sessions.begin() as session:
        remove_user(session, "carol", actor="cli")
    with pytest.raises(UserError, match="no user 'carol'"), sessions.begin() as session:
        remove_user(session, "carol", actor="cli")
    with sessions() as session:
        assert session.scalars(select(User)).all() == []
        assert [e.action for e in audit.events(session)] == ["user_add", "user_remove"]


def test_the_database_refuses_to_rewrite_the_audit_trail(store):
    _, sessions = store
    with sessions.begin() as session:
        audit.record(session, "service", "start", "version=0")
    for statement in (update(AuditEvent).values(actor="mallory"), delete(AuditEvent)):
        with pytest.raises(DatabaseError, match="append-only"), sessions.begin() as session:
            session.execute(statement)
    with sessions() as session:
        assert [(e.actor, e.action) for e in audit.events(session)] == [("service", "start")]


def test_the_commands_add_list_remove_and_show_the_trail(tmp_path, monkeypatch):
    monkeypatch.setenv("ECG2AGE__STORAGE__DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")

    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert run("user", "add", "dora", "--role", "viewer", "--password-stdin") == (
        0,
        "user dora added (viewer)\n",
    )
    code, text = run("user", "list", "--format", "json")
    assert code == 0 and [u["name"] for u in json.loads(text)] == ["dora"]
    assert PASSWORD not in text
    assert run("user", "remove", "dora")[0] == 0
    assert run("user", "remove", "dora")[0] == 1  # no such user: one line on stderr
    code, text = run("audit", "--since", "2000-01-01", "--format", "json")
    assert code == 0 and [e["action"] for e in json.loads(text)] == ["user_add", "user_remove"]
    assert run("audit", "--since", "yesterday")[0] == 1
