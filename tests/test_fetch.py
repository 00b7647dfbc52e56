"""``model fetch`` against a local HTTP server: right and wrong sha, resume, no network."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from ecg2age_dicom.errors import ModelError
from ecg2age_dicom.fetch import fetch
from ecg2age_dicom.model import load_card

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(BaseHTTPRequestHandler):
    """Serves PAYLOAD with Range support; ``cut_after`` bytes then a dropped connection."""

    cut_after: ClassVar[int | None] = None
    requests: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        RangeHandler.requests.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if RangeHandler.cut_after is not None:
            self.wfile.write(body[: RangeHandler.cut_after])
            RangeHandler.cut_after = None
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the download breaks off here
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/model.keras"
    httpd.shutdown()
    httpd.server_close()


def card_for(folder: Path, url: str, sha: str | None = None):
    (folder / "model.toml").write_text(
        f'name = "Remote"\nversion = "1"\nintended_use = "tests"\nfile = "model.keras"\n'
        f'sha256 = "{sha or hashlib.sha256(PAYLOAD).hexdigest()}"\n'
        f'size_bytes = {len(PAYLOAD)}\nsource_url = "{url}"\n'
    )
    return load_card(folder / "model.toml")


def test_download_with_progress_and_sha_check(tmp_path, server):
    seen = []
    path = fetch(card_for(tmp_path, server), progress=lambda got, total: seen.append((got, total)))
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "model.keras.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    # Already there and right: no second download.
    fetch(card_for(tmp_path, server))
    assert len(RangeHandler.requests) == 1


def test_wrong_sha_is_refused_and_nothing_kept(tmp_path, server):
    with pytest.raises(ModelError, match="card says"):
        fetch(card_for(tmp_path, server, sha="1" * 64))
    assert not (tmp_path / "model.keras").exists()
    assert not (tmp_path / "model.keras.part").exists()


def test_interrupted_download_resumes(tmp_path, server):
    RangeHandler.cut_after = 300_000
    card = card_for(tmp_path, server)
    with pytest.raises(ModelError, match="the next fetch resumes"):
        fetch(card)
    part = tmp_path / "model.keras.part"
    assert part.stat().st_size == 300_000
    assert not (tmp_path / "model.keras").exists()
    path = fetch(card)
    assert path.read_bytes() == PAYLOAD
    assert RangeHandler.requests == [None, "bytes=300000-"]


def test_no_network_explains_the_git_lfs_route(tmp_path):
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelError) as caught:
        fetch(card_for(tmp_path, f"http://127.0.0.1:{port}/model.keras"), timeout_s=5)
    assert "git lfs pull --include 'model_zoo/ECG2Age/ECG2Age.keras'" in caught.value.reason
