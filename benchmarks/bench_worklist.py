"""The console's worklist at 100,000 ECGs: milliseconds per page, as the browser gets it.

Run: ``.venv/bin/python -m benchmarks.bench_worklist [--rows N] [--runs R]
[--database-url URL]`` (``make bench`` runs it on SQLite). It fills a fresh database with N
received ECGs the way the service leaves them (each with a prediction, an SR and a PDF, each
report delivered, 1 % failed, 2 % waiting; five carts, two destinations), logs in, and times
each page below R times through FastAPI's TestClient (template rendering included); it prints
the median and the worst run. Target (issue 12): <= 300 ms per page.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from ecg2age_dicom.config import Settings
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import make_engine, queries, session_factory, upgrade
from ecg2age_dicom.store.models import (
    Delivery,
    InstanceStatus,
    Prediction,
    ReceivedInstance,
    Report,
)
from ecg2age_dicom.users import add_user
from ecg2age_dicom.web import ServiceState, create_app

PASSWORD = "benchmark password"
CHUNK = 5000


def fill(engine, rows: int, seed: int = 1) -> dict[str, str]:
    """N ECGs with their predictions, reports and deliveries; returns values to search for."""
    rng = random.Random(seed)
    start = datetime.now(timezone.utc) - timedelta(days=365)
    with engine.begin() as connection:
        for first in range(1, rows + 1, CHUNK):
            ids = range(first, min(rows, first + CHUNK - 1) + 1)
            status = {n: "failed" if n % 100 == 0 else "received" if n % 50 == 1 else "predicted"
                      for n in ids}  # fmt: skip
            connection.execute(
                insert(ReceivedInstance),
                [
                    {
                        "id": n,
                        "sop_instance_uid": f"1.2.826.0.1.3680043.10.1.{n}",
                        "study_instance_uid": f"1.2.826.0.1.3680043.10.2.{n}",
                        "series_instance_uid": f"1.2.826.0.1.3680043.10.3.{n}",
                        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.9.1.1",
                        "calling_ae_title": f"CART{n % 5}",
                        "peer_address": "10.0.0.1:4000",
                        "received_at": start + timedelta(seconds=n * 300),
                        "spool_path": f"/nonexistent/{n}.dcm",
                        "status": status[n],
                        "patient_id": f"PID{n:07d}",
                        "accession_number": f"ACC{n:07d}",
                        "patient_sex": "MF"[n % 2],
                    }
                    for n in ids
                ],
            )
            predicted = [n for n in ids if status[n] == "predicted"]
            connection.execute(
                insert(Prediction),
                [
                    {
                        "id": n,
                        "instance_id": n,
                        "model_name": "ECG2Age-PTBXL",
                        "model_version": "1.0.0",
                        "predicted_age_years": rng.uniform(20, 90),
                        "chronological_age_years": rng.uniform(20, 90),
                        "age_gap_years": rng.uniform(-15, 15),
                        "quality_flags": [],
                        "created_at": start + timedelta(seconds=n * 300 + 2),
                    }
                    for n in predicted
                ],
            )
            connection.execute(
                insert(Report),
                [
                    {
                        "id": 2 * n + k,
                        "prediction_id": n,
                        "kind": kind,
                        "sop_instance_uid": f"1.2.826.0.1.3680043.10.4.{2 * n + k}",
                        "path": "",
                        "created_at": start + timedelta(seconds=n * 300 + 2),
                    }
                    for n in predicted
                    for k, kind in enumerate(("sr", "pdf"))
                ],
            )
            connection.execute(
                insert(Delivery),
                [
                    {
                        "report_id": 2 * n + k,
                        "destination": destination,
                        "status": "delivery_failed" if n % 97 == 0 else "delivered",
                        "attempts": 1,
                        "next_attempt_at": None,
                        "delivered_at": start + timedelta(seconds=n * 300 + 3),
                    }
                    for n in predicted
                    for k in (0, 1)
                    for destination in ("PACS", "VIEWER")
                ],
            )
    with Session(engine) as session, session.begin():  # as the store keeps it
        queries.refresh_delivery_state(
            session,
            select(ReceivedInstance.id).where(ReceivedInstance.status == InstanceStatus.PREDICTED),
        )
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
    middle = rows // 2 + 3
    return {"patient": f"PID{middle:07d}", "uid": f"1.2.826.0.1.3680043.10.1.{middle}"}


def pages(found: dict[str, str], rows: int) -> dict[str, str]:
    return {
        "newest page": "/worklist",
        "page at row N/2 (key)": f"/worklist?before={rows // 2}",
        "status delivered": "/worklist?status=delivered",
        "status delivery_failed": "/worklist?status=delivery_failed",
        "status predicted": "/worklist?status=predicted",
        "calling AE": "/worklist?calling_ae=CART3",
        "destination": "/worklist?destination=VIEWER",
        "date range (one week)": "/worklist?received_from=2026-06-01&received_to=2026-06-07",
        "search patient ID": f"/worklist?q={found['patient']}",
        "search UID": f"/worklist?q={found['uid']}",
        "overview": "/",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{folder}/bench.sqlite3"
        engine = make_engine(url)
        if args.database_url:  # a PostgreSQL server: start from empty tables
            with engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade(engine)
        began = time.perf_counter()
        found = fill(engine, args.rows)
        filled_s = time.perf_counter() - began
        print(f"{engine.dialect.name}: {args.rows} ECGs filled in {filled_s:.0f} s")
        sessions = session_factory(engine)
        with sessions.begin() as session:
            add_user(session, "bench", "viewer", PASSWORD, actor="bench")
        settings = Settings(
            storage={"spool_dir": Path(folder) / "spool", "database_url": url},
            web={"secret_key_file": Path(folder) / "key"},
            destinations=[],
            sr={"send_to": []},
        )
        Spool(settings.storage.spool_dir).incoming.mkdir(parents=True)
        client = TestClient(create_app(settings, ServiceState(0), sessions))
        login = client.get("/login").text
        token = login.split('name="csrf" value="')[1].split('"')[0]
        client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf": token})
        print(f"{'page':<26}{'median ms':>10}{'worst ms':>10}  (target <= 300)")
        for label, path in pages(found, args.rows).items():
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                assert answer.status_code == 200, (path, answer.status_code)
            print(f"{label:<26}{statistics.median(times):>10.1f}{max(times):>10.1f}")
        engine.dispose()


if __name__ == "__main__":
    main()
