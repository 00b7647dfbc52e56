"""Delivery policy: backoff, retries up to max_attempts, permanent failures, resend."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select, update

from ecg2age_dicom.config import Settings
from ecg2age_dicom.delivery import Deliverer, backoff_s
from ecg2age_dicom.net.scu import Outcome, SendResult
from ecg2age_dicom.store import queries
from ecg2age_dicom.store.models import Delivery
from tests.store_factory import predicted

SETTINGS = Settings(
    delivery={"max_attempts": 3, "initial_backoff_s": 5, "max_backoff_s": 12},
    sr={"send_to": ["PACS", "@sender"]},
)


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    rng = random.Random(1)
    delays = [backoff_s(n, 5, 600, rng) for n in range(1, 9)]
    for n, delay in enumerate(delays, start=1):
        assert 0.8 * min(600, 5 * 2 ** (n - 1)) <= delay <= min(600, 1.2 * 5 * 2 ** (n - 1))
    assert backoff_s(30, 5, 600, rng) <= 600


def one_report(sessions, calling_ae: str = "CART1") -> None:
    instance = queries.NewInstance(
        "1.1", "1.2", "1.3", "1.2.840.10008.5.1.4.1.1.9.1.1", "/x.dcm", calling_ae_title=calling_ae
    )
    predicted(sessions, instance, "2.1", "/sr.dcm", ["PACS", "@sender"])


def make_due_now(sessions) -> None:
    with sessions.begin() as session:
        session.execute(update(Delivery).values(next_attempt_at=queries.utcnow()))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_retries_until_max_attempts_then_resend(store):
    _, sessions = store
    one_report(sessions)
    calls = []

    def unreachable(destination, paths):
        calls.append(destination.name)
        return [SendResult(p, Outcome.RETRY, "connection refused") for p in paths]

    deliverer = Deliverer(sessions, SETTINGS, send=unreachable, rng=random.Random(0))
    for _ in range(3):
        make_due_now(sessions)
        deliverer.run_once()
    with sessions() as session:
        deliveries = {d.destination: d for d in session.scalars(select(Delivery))}
    pacs = deliveries["PACS"]
    assert (pacs.status.value, pacs.attempts, pacs.last_error) == (
        "delivery_failed",
        3,
        "connection refused",
    )
    # No destination has the sender's AE title: fails at once, with the reason.
    sender = deliveries["@sender"]
    assert sender.status.value == "delivery_failed" and sender.attempts == 1
    assert "calling AE title 'CART1'" in sender.last_error
    assert calls == ["PACS"] * 3

    with sessions.begin() as session:
        assert queries.resend(session, "delivery_failed", sop="1.1") == 2
    delivered = Deliverer(
        sessions,
        SETTINGS.model_copy(
            update={
                "destinations": [
                    *SETTINGS.destinations,
                    SETTINGS.destinations[0].model_copy(
                        update={"name": "CART", "ae_title": "CART1"}
                    ),
                ]
            }
        ),
        send=lambda d, paths: [SendResult(p, Outcome.DELIVERED) for p in paths],
    )
    assert delivered.run_once() == 2
    with sessions() as session:
        assert [r.status for r in queries.results(session)] == ["delivered"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_permanent_refusal_fails_at_once(store):
    _, sessions = store
    one_report(sessions, calling_ae="PACS")  # "@sender" resolves to the PACS destination
    deliverer = Deliverer(
        sessions,
        SETTINGS,
        send=lambda d, paths: [
            SendResult(p, Outcome.PERMANENT, "C-STORE status 0xA900") for p in paths
        ],
    )
    assert deliverer.run_once() == 2
    with sessions() as session:
        assert {d.status.value for d in session.scalars(select(Delivery))} == {"delivery_failed"}
        assert queries.results(session)[0].status == "delivery_failed"
