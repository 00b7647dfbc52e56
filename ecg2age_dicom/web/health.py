"""Is the service alive, and is it ready to take ECGs? The checks behind ``/readyz``.

:class:`ServiceState` is what the service's watch loop knows and tells the web side (the
listener's state, how many workers have their model loaded). :func:`readiness` adds what it
checks itself, each within a bound: the database answers ``SELECT 1``, and a file can be
created in the spool's incoming folder. The answer holds no PHI: states, counts, the model's
name and version.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker


@dataclass
class ServiceState:
    """The service's own state, set by its watch loop (thread-safe)."""

    workers_expected: int = 0
    model: tuple[str, str] | None = None  # the card's (name, version); None: no worker
    _listener_up: bool = False
    _workers_ready: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, *, listener_up: bool | None = None, workers_ready: int | None = None) -> None:
        with self._lock:
            if listener_up is not None:
                self._listener_up = listener_up
            if workers_ready is not None:
                self._workers_ready = workers_ready

    def snapshot(self) -> tuple[bool, int]:
        """(listener up, workers ready)."""
        with self._lock:
            return self._listener_up, self._workers_ready


def database_answers(sessions: sessionmaker[Session]) -> bool:
    """True when the database runs ``SELECT 1`` (the engine's pool and connect timeout bound
    the wait)."""
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # any driver error means not ready
        return False


def spool_writable(incoming: Path) -> bool:
    """True when a file can be created (and is removed again) where ECGs arrive."""
    try:
        with tempfile.NamedTemporaryFile(dir=incoming, prefix=".readyz-"):
            return True
    except OSError:
        return False


def readiness(
    state: ServiceState, sessions: sessionmaker[Session], incoming: Path
) -> tuple[bool, dict[str, object]]:
    """(ready, the JSON body of ``/readyz``): every check, and the model in use."""
    listener_up, workers_ready = state.snapshot()
    checks = {
        "listener": listener_up,
        "database": database_answers(sessions),
        "spool": spool_writable(incoming),
        "workers": workers_ready >= state.workers_expected,
    }
    ready = all(checks.values())
    body: dict[str, object] = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "workers": {"ready": workers_ready, "expected": state.workers_expected},
        "model": " ".join(state.model) if state.model else None,
    }
    return ready, body
