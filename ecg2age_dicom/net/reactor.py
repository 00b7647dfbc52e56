"""A fix for pynetdicom's reactor pause hand-shake, which loses C-STORE responses.

The defect (pynetdicom 3.0.4, ``association.py``): an association's reactor thread runs::

    self._is_paused = True
    self._reactor_checkpoint.wait()      # a threading.Event
    self._is_paused = False
    context_id, msg = self.dimse.get_msg(block=False)

and ``send_c_store`` (like every ``send_*``) pauses it with::

    self._reactor_checkpoint.clear()
    while not self._is_paused:
        time.sleep(0.0001)
    self.dimse.send_msg(req, ...)
    cx_id, rsp = self.dimse.get_msg(block=True)

When the checkpoint is still set from the previous message, the reactor's ``wait()`` returns
at once, and ``_is_paused`` stays True until the next line runs. If the thread switch falls
there, the sender sees "paused", sends its request, and the reactor, resuming, takes the
response off the queue (logging "Received unexpected C-STORE service message"); the sender
then waits the whole DIMSE timeout and aborts the association. Seen here as 30 s stalls in
bursts of a few hundred reports.

:class:`ReactorCheckpoint` replaces the Event of one association. Its ``wait()`` returns only
after setting ``_is_paused = False`` under the same lock that ``clear()`` takes, so that
"paused" is never seen between a wait that returned and the reactor's next ``get_msg``.
:func:`install_checkpoint` puts it in place when the connection opens (``EVT_CONN_OPEN``),
before the reactor first runs. ``docs/upstream-defects.md`` writes the defect up for
upstream.
"""

from __future__ import annotations

import threading

from pynetdicom import evt
from pynetdicom.association import Association


class ReactorCheckpoint:
    """The reactor's pause point, with the ``threading.Event`` methods pynetdicom uses."""

    def __init__(self, assoc: Association) -> None:
        self._assoc = assoc
        self._condition = threading.Condition()
        self._running = True  # as pynetdicom's Event: set when the association is made

    def is_set(self) -> bool:
        return self._running

    def set(self) -> None:
        with self._condition:
            self._running = True
            self._condition.notify_all()

    def clear(self) -> None:
        with self._condition:
            self._running = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block while paused; on resuming, say "not paused" before anyone can pause again."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._running, timeout):
                return False
            self._assoc._is_paused = False
            return True


def install_checkpoint(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: give the association a :class:`ReactorCheckpoint`."""
    event.assoc._reactor_checkpoint = ReactorCheckpoint(event.assoc)  # type: ignore[assignment]


CHECKPOINT_HANDLER = (evt.EVT_CONN_OPEN, install_checkpoint)
