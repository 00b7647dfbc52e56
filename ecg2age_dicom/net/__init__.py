"""The DICOM network edges: ``scp`` receives ECGs, ``scu`` sends reports. Neither decodes."""

import socket

from pynetdicom import evt


def _no_delay(event: evt.Event) -> None:
    # Nagle + delayed ACK cost ~40 ms per DIMSE message on small PDUs: switch Nagle off.
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NO_DELAY_HANDLER = (evt.EVT_CONN_OPEN, _no_delay)
