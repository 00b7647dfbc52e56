"""Engines, sessions and migrations for SQLite (default) and PostgreSQL (psycopg 3).

SQLite connections get WAL journaling, a busy timeout and foreign keys on every connect.
Migrations are the Alembic scripts shipped in ``store/migrations``; :func:`upgrade` applies
them (``ecg2age-dicom db upgrade``, and the service at start).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
POSTGRES_CONNECT_S = 10
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling defers BEGIN; switch it off so that the "begin"
    # event below decides (SQLAlchemy's documented recipe for serializable SQLite).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # FULL: a commit is on disk when it returns (NORMAL in WAL mode may lose the last
    # commits in a power cut, and with them ECGs whose senders heard "success").
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def make_engine(database_url: str) -> Engine:
    """An engine for ``database_url``; creates the SQLite file's folder when needed."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_connect)
        # Take the write lock at BEGIN: a deferred transaction that later writes can fail
        # with "database is locked" at once instead of waiting out the busy timeout.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    # A server that does not answer must not hang a worker or a health check for minutes.
    timeout = {} if "connect_timeout" in url.query else {"connect_timeout": POSTGRES_CONNECT_S}
    return create_engine(url, pool_pre_ping=True, pool_timeout=30, connect_args=timeout)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def open_store(database_url: str, *, migrate: bool = True) -> Iterator[sessionmaker[Session]]:
    """Sessions on the database at ``database_url``, migrated first unless ``migrate`` is
    False (a worker process whose parent migrated); the engine is closed after."""
    engine = make_engine(database_url)
    try:
        if migrate:
            upgrade(engine)
        yield session_factory(engine)
    finally:
        engine.dispose()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the shipped Alembic migrations up to ``revision``.

    On SQLite, foreign keys are off while they run: a batch migration re-creates a table that
    others reference (SQLite's documented procedure for altering a table), and the keys are
    checked before they are switched on again.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        raw: Any = connection.connection.driver_connection  # the sqlite3 connection
        if sqlite:  # outside any transaction: inside one the pragma does nothing
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("the migration left rows whose foreign key is broken")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")
