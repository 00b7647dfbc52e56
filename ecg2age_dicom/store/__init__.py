"""The results store: SQLAlchemy 2 models, Alembic migrations and the queries the stages use.

SQLite by default (``sqlite:///var/ecg2age.sqlite3``), PostgreSQL through psycopg 3 for real
sites (``postgresql+psycopg://user@host/db``), selected by ``[storage] database_url``.
"""

from ecg2age_dicom.store.db import make_engine, open_store, session_factory, upgrade
from ecg2age_dicom.store.models import (
    Delivery,
    DeliveryStatus,
    InstanceStatus,
    Prediction,
    ReceivedInstance,
    Report,
)

__all__ = [
    "Delivery",
    "DeliveryStatus",
    "InstanceStatus",
    "Prediction",
    "ReceivedInstance",
    "Report",
    "make_engine",
    "open_store",
    "session_factory",
    "upgrade",
]
