"""Sockets whose every wait a peer controls is bounded.

pynetdicom's ``network_timeout`` bounds the idle time between PDUs, but the DUL thread reads a
PDU with blocking ``recv`` calls: a peer that stops in the middle of one (16 bytes of an
A-ASSOCIATE-RQ, or inside a P-DATA PDU) holds the association for ever, and with
``max_associations + 1`` such connections nobody else gets in. Its server also runs the TLS
handshake in the accept loop, without a timeout: one silent TCP connection blocks every TLS
client. Here:

- :class:`GuardedSocket` (and :class:`GuardedSSLSocket` for TLS) follow the PDU headers in the
  byte stream and refuse a PDU longer than ``max_pdu_bytes``, or one that has not arrived
  completely within ``pdu_timeout_s`` of its first byte (a trickle of one byte a minute counts
  as stalled); pynetdicom then closes the connection ("connection closed before the entire
  PDU was received") and the association's slot is free.
- :class:`ListenerServer` accepts connections without touching them, and runs the TLS
  handshake in each connection's own thread, with ``handshake_timeout_s``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import ssl
import struct
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

PDU_HEADER_BYTES = 6  # type, reserved, 4-byte big-endian length


def _no_delay(event: evt.Event) -> None:
    # Nagle + delayed ACK cost ~40 ms per DIMSE message on small PDUs: switch Nagle off.
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NO_DELAY_HANDLER = (evt.EVT_CONN_OPEN, _no_delay)


class _PDUGuard:
    """``recv`` and ``send`` that bound the time and size of each PDU the peer sends."""

    pdu_timeout_s: float = 60.0
    max_pdu_bytes: int = 1 << 20
    _header: bytearray
    _left: int  # bytes of the current PDU's body still to come
    _deadline: float | None  # when the PDU being read must be complete

    def guard(self, pdu_timeout_s: float, max_pdu_bytes: int) -> None:
        self.pdu_timeout_s, self.max_pdu_bytes = pdu_timeout_s, max_pdu_bytes
        self._header, self._left, self._deadline = bytearray(), 0, None

    def recv(self, buflen: int = 4096, flags: int = 0) -> bytes:
        now = time.monotonic()
        if self._deadline is None:  # this read starts a PDU
            self._deadline = now + self.pdu_timeout_s
        remaining = self._deadline - now
        if remaining <= 0:
            raise TimeoutError(f"PDU not complete after {self.pdu_timeout_s:g} s")
        self.settimeout(remaining)  # type: ignore[attr-defined]
        data: bytes = super().recv(buflen, flags)  # type: ignore[misc]
        self._follow(data)
        return data

    def send(self, data: Any, flags: int = 0) -> int:
        self.settimeout(self.pdu_timeout_s)  # type: ignore[attr-defined]
        sent: int = super().send(data, flags)  # type: ignore[misc]
        return sent

    def _follow(self, data: bytes) -> None:
        """Advance through ``data``: header bytes, then the body the header announced."""
        view = memoryview(data)
        while view:
            if self._left == 0:
                take = min(PDU_HEADER_BYTES - len(self._header), len(view))
                self._header += view[:take]
                view = view[take:]
                if len(self._header) < PDU_HEADER_BYTES:
                    continue
                (length,) = struct.unpack(">L", self._header[2:])
                self._header.clear()
                if length > self.max_pdu_bytes:
                    raise ConnectionError(
                        f"PDU of {length} bytes announced: over the {self.max_pdu_bytes} allowed"
                    )
                self._left = length
            else:
                take = min(self._left, len(view))
                self._left -= take
                view = view[take:]
            if self._left == 0 and not self._header:
                self._deadline = None  # PDU complete: the next read starts the next one


class GuardedSocket(_PDUGuard, socket.socket):
    """A plain TCP socket with :class:`_PDUGuard`'s bounds."""


class GuardedSSLSocket(_PDUGuard, ssl.SSLSocket):
    """A TLS socket with :class:`_PDUGuard`'s bounds."""


class ListenerServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with bounded TLS handshakes and guarded sockets.

    Extra keyword arguments (through ``AE.make_server``): ``tls`` (a server-side
    ``ssl.SSLContext`` or None), ``handshake_timeout_s``, ``pdu_timeout_s`` and
    ``max_pdu_bytes``.
    """

    daemon_threads = True

    def __init__(
        self,
        *args: Any,
        tls: ssl.SSLContext | None,
        handshake_timeout_s: float,
        pdu_timeout_s: float,
        max_pdu_bytes: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)  # no ssl_context: the accept loop stays plain TCP
        if tls is not None:
            tls.sslsocket_class = GuardedSSLSocket
        self.tls = tls
        self.handshake_timeout_s = handshake_timeout_s
        self.pdu_timeout_s = pdu_timeout_s
        self.max_pdu_bytes = max_pdu_bytes

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """In the connection's own thread: TLS handshake (bounded), guard, then pynetdicom."""
        try:
            request = self._guarded(request)
        except OSError as exc:  # handshake timed out or failed, or the peer went away
            log.warning("connection from %s closed before association: %s", client_address[0], exc)
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)

    def _guarded(self, raw: socket.socket) -> _PDUGuard:
        guarded: _PDUGuard
        if self.tls is None:
            guarded = GuardedSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        else:
            raw.settimeout(self.handshake_timeout_s)
            guarded = self.tls.wrap_socket(raw, server_side=True)  # type: ignore[assignment]
        guarded.guard(self.pdu_timeout_s, self.max_pdu_bytes)
        return guarded

    def shutdown(self) -> None:
        """Stop serving and close the socket (this server is not in ``AE._servers``)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` resolves to a loopback address (reachable from this host only)."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False
