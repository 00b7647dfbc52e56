"""Serve the web application with uvicorn in a thread of the service's main process.

:func:`start_web` binds the ``[web]`` host and port before it returns (a port in use stops
start-up with a clear error, as the DICOM listener's does) and serves until
:meth:`WebServer.stop`; over HTTPS with ``[web.tls]`` (uvicorn's TLS, client certificates
when ``require_client_cert``). No access log: request lines would carry the paths of the console's
pages, and the service logs what matters itself.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from ecg2age_dicom.config import WebSettings
from ecg2age_dicom.errors import ConfigError
from ecg2age_dicom.net.sockets import is_loopback

STOP_TIMEOUT_S = 10.0


@dataclass
class WebServer:
    """A running uvicorn server and its thread."""

    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        """Finish the requests in hand (at most :data:`STOP_TIMEOUT_S`) and stop."""
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT_S)


def start_web(settings: WebSettings, app: FastAPI, users: int) -> WebServer | None:
    """Bind ``settings.host:port`` and serve ``app`` in a daemon thread (None when ``[web]
    enabled = false``); ``users``: how many users the database holds.

    Raises
    ------
    ConfigError
        The address cannot be bound (in use, or not this host's), or it is reachable from
        other hosts while no user exists (nobody could log in to what it will show).
    """
    if not settings.enabled:
        return None
    if not users and not is_loopback(settings.host):
        raise ConfigError(
            f"[web] host {settings.host} is reachable from other hosts and no user exists: "
            "add one (ecg2age-dicom user add NAME --role admin) or keep host = 127.0.0.1"
        )
    try:
        bound = socket.create_server((settings.host, settings.port), reuse_port=False)
    except OSError as exc:
        raise ConfigError(
            f"[web] cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None
    tls = settings.tls
    config = uvicorn.Config(
        app,
        ssl_certfile=tls.cert if tls else None,
        ssl_keyfile=tls.key if tls else None,
        ssl_ca_certs=str(tls.ca) if tls and tls.ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.require_client_cert else ssl.CERT_NONE,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=int(STOP_TIMEOUT_S),
        limit_concurrency=64,  # a flood of connections gets 503s, not the service's memory
    )
    try:
        config.load()  # here, so that an unusable certificate stops start-up with its reason
    except (OSError, ssl.SSLError) as exc:
        bound.close()
        raise ConfigError(f"[web.tls] cannot be used: {exc}") from None
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [bound]}, name="web", daemon=True
    )
    thread.start()
    return WebServer(server, thread)
