"""Shared fixtures: databases (SQLite and the real PostgreSQL), a tiny model runtime."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ecg2age_dicom.model import ModelRuntime
from ecg2age_dicom.store import make_engine, session_factory, upgrade
from tests.model_factory import tiny_model, write_card

POSTGRES_ADMIN_URL = os.environ.get(
    "ECG2AGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means "no server here"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new schema in the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ecg2age.sqlite3'}"
        return
    problem = _postgres_reachable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is required in CI: {problem}")
        pytest.skip(f"no PostgreSQL server reachable at {POSTGRES_ADMIN_URL}: {problem}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def store(database_url):
    """(engine, sessionmaker) on a migrated empty database."""
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine, session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def tiny_runtime(tmp_path_factory) -> ModelRuntime:
    folder = tmp_path_factory.mktemp("tiny-model")
    model = tiny_model(folder / "tiny.keras")
    card = write_card(folder, model, "[output]\nscale = 1.0\noffset = 50.0\n")
    return ModelRuntime.load(card)


@pytest.fixture
def in_repository(monkeypatch, tmp_path):
    """The CLI as run from the repository (the default config's relative paths: model card,
    var/) with its own SQLite database."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("ECG2AGE__STORAGE__DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
