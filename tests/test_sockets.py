"""Bounded network edges: stalled and oversized PDUs are dropped, TLS handshakes do not block
the accept loop. Hostile peers are raw sockets; the good peer is pynetdicom."""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from ecg2age_dicom.net.sockets import ListenerServer

PDU_TIMEOUT_S = 1.0
ACSE_TIMEOUT_S = 2.0  # how long pynetdicom keeps a connection's slot waiting for its request
MAX_ASSOCIATIONS = 2


def start(tls: ssl.SSLContext | None = None, max_pdu: int = 1 << 20) -> ListenerServer:
    ae = AE(ae_title="ECG2AGE")
    ae.add_supported_context(Verification)
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.acse_timeout = ACSE_TIMEOUT_S
    ae.network_timeout = 30
    server = ae.make_server(
        ("127.0.0.1", 0),
        server_class=ListenerServer,
        tls=tls,
        handshake_timeout_s=PDU_TIMEOUT_S,
        pdu_timeout_s=PDU_TIMEOUT_S,
        max_pdu_bytes=max_pdu,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def server() -> Iterator[ListenerServer]:
    started = start()
    yield started
    started.shutdown()


def echo(port: int, tls: tuple[ssl.SSLContext, str] | None = None) -> bool:
    ae = AE(ae_title="CART1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="ECG2AGE", tls_args=tls)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return status.Status == 0


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True if the other end closes ``sock`` within ``within_s``."""
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass  # an A-ABORT may come first
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def a_associate_rq_start() -> bytes:
    """The first 16 bytes of an A-ASSOCIATE-RQ announcing 200 bytes that never come."""
    return struct.pack(">BBL", 0x01, 0, 200) + b"\x00\x01\x00\x00ECG2"


def test_a_peer_that_stops_inside_a_pdu_is_dropped(server):
    port = server.server_address[1]
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_ASSOCIATIONS + 1)]
    for sock in stalled:
        sock.sendall(a_associate_rq_start())
    for sock in stalled:
        assert closed_by_peer(sock, within_s=PDU_TIMEOUT_S + ACSE_TIMEOUT_S + 10)
        sock.close()
    assert eventually_echoes(port)


def eventually_echoes(port: int, within_s: float = 10.0) -> bool:
    """True once an echo succeeds: a dropped connection's slot is free after the ACSE
    timeout (pynetdicom's acceptor thread waits that long for a request that never came)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if echo(port):
            return True
        time.sleep(0.5)
    return False


def test_a_trickle_is_a_stall(server):
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        data = a_associate_rq_start()
        deadline = time.monotonic() + PDU_TIMEOUT_S + 10
        closed = False
        for byte in data:  # one byte every 0.3 s: never idle for long, never done
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.3)
        closed = closed or closed_by_peer(sock, max(deadline - time.monotonic(), 0.1))
        assert closed


def test_an_oversized_pdu_is_refused_before_it_is_read():
    server = start(max_pdu=64 * 1024)
    try:
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(struct.pack(">BBL", 0x04, 0, 210_000_000) + b"\x00" * 1024)
            assert closed_by_peer(sock, within_s=5)
        assert echo(port)
    finally:
        server.shutdown()


def self_signed(folder: Path) -> tuple[Path, Path]:
    key, cert = folder / "server.key", folder / "server.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return key, cert


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_an_idle_connection_does_not_block_tls_clients(tmp_path):
    key, cert = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = start(tls=context)
    try:
        port = server.server_address[1]
        idle = socket.create_connection(("127.0.0.1", port))  # TCP only, no handshake
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        assert echo(port, tls=(client, "localhost"))  # while the idle one is still open
        assert closed_by_peer(idle, within_s=PDU_TIMEOUT_S + 10)  # then its handshake times out
        idle.close()
    finally:
        server.shutdown()
