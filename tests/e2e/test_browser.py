"""The console in a real browser: Playwright driving Debian's chromium against a running
``serve`` that has scored ECGs sent by DCMTK's storescu and delivered them to storescp.

Log in, find the ECGs just sent, open one and see its trace; resend as admin; no Resend for a
viewer; a hostile Patient's Name shown as text (no script runs); no page and no PHI without a
login; a POST without the CSRF token refused. ``ECG2AGE_SCREENSHOTS=DIR`` also saves the
README's screenshots there.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from ecg2age_dicom.cli import main
from ecg2age_dicom.store import queries
from tests.ecg_factory import make_ecg
from tests.peers import start_storescp, storescu, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ADMIN, VIEWER = ("alice", "alice password 1"), ("victor", "victor password 1")
HOSTILE_NAME = "<img src=x onerror=alert(1)>^Mallory"

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (make install adds it)",
)


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


def add_user(config: Path, user: tuple[str, str], role: str, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(user[1] + "\n"))
    command = ["--config", str(config), "user", "add", user[0], "--role", role]
    assert main([*command, "--password-stdin"], out=io.StringIO()) == 0


def log_in(page, base: str, user: tuple[str, str]) -> None:
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.fill("input[name=username]", user[0])
    page.fill("input[name=password]", user[1])
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_console_in_chromium(make_service, processes, tmp_path, browser, monkeypatch):
    service = make_service()
    config = service.folder / "ecg2age.toml"
    main(["--config", str(config), "db", "upgrade"], out=io.StringIO())
    add_user(config, ADMIN, "admin", monkeypatch)
    add_user(config, VIEWER, "viewer", monkeypatch)
    start_storescp(processes, service.pacs_port, tmp_path / "pacs")
    service.start()
    files = []
    for n, name in enumerate([HOSTILE_NAME, "Muster^Erika", "Rossi^Mario"]):
        made = make_ecg()
        made.dataset.PatientName, made.dataset.PatientID = name, f"PID-{n}"
        made.dataset.PatientSex = "MF"[n % 2]
        files.append(made.write(tmp_path / f"ecg{n}.dcm", ExplicitVRLittleEndian))
    assert storescu(service.port, files).returncode == 0
    uids = [make_uid(path) for path in files]
    wait_for(lambda: delivered(service) == len(files), 120, "every ECG delivered")
    base = f"http://127.0.0.1:{service.web_port}"

    anonymous = browser.new_page()
    alerts: list[str] = []
    anonymous.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    for path in ("/", "/worklist", f"/ecg/{uids[0]}", "/cohort.csv", "/audit"):
        anonymous.goto(base + path)
        assert anonymous.url.startswith(base + "/login"), path
        assert "PID-" not in anonymous.content() and "Mallory" not in anonymous.content()
    forged = anonymous.request.post(f"{base}/ecg/{uids[0]}/resend", form={"csrf": "forged"})
    assert forged.status == 403 and "Mallory" not in forged.text()

    admin = browser.new_page(viewport={"width": 1400, "height": 1000})
    admin.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    log_in(admin, base, ADMIN)
    shots = os.environ.get("ECG2AGE_SCREENSHOTS")
    if shots:
        admin.screenshot(path=f"{shots}/overview.png", full_page=True)
    admin.click("text=Worklist")
    for uid in uids:
        assert admin.locator(f"#worklist a:text-is('{uid}')").count() == 1
    if shots:
        admin.screenshot(path=f"{shots}/worklist.png", full_page=True)
    admin.click(f"a:text-is('{uids[0]}')")
    admin.wait_for_selector("svg.trace")
    assert admin.locator("svg.trace polyline.lead").count() == 13
    assert admin.locator("#patient dd").first.inner_text() == "<img src"  # shown as text
    assert admin.locator("main img").count() == 0 and not alerts
    if shots:
        admin.screenshot(path=f"{shots}/ecg.png", full_page=True)
    admin.click("#resend")
    admin.wait_for_selector("text=deliveries will be sent again")
    wait_for(lambda: delivered(service) == len(files), 60, "the resent ECG delivered again")
    # A POST from the logged-in browser without the token is refused.
    no_token = admin.request.post(f"{base}/ecg/{uids[0]}/resend", form={})
    assert no_token.status == 403
    admin.goto(base + "/audit")
    audit_text = admin.inner_text("#audit")
    for action in ("login", "view_ecg", "resend", "start"):
        assert action in audit_text
    if shots:
        admin.goto(base + "/cohort")
        admin.screenshot(path=f"{shots}/cohort.png", full_page=True)
        admin.goto(base + "/model")
        admin.screenshot(path=f"{shots}/model.png", full_page=True)

    viewer = browser.new_page()
    log_in(viewer, base, VIEWER)
    viewer.goto(f"{base}/ecg/{uids[1]}")
    viewer.wait_for_selector("svg.trace")
    assert viewer.locator("#resend").count() == 0
    assert viewer.locator("a:text-is('Audit')").count() == 0
    token = viewer.locator("input[name=csrf]").first.get_attribute("value")
    refused = viewer.request.post(f"{base}/ecg/{uids[1]}/resend", form={"csrf": token})
    assert refused.status == 403
    assert not alerts
    assert service.stop() == 0
    log = service.log.read_text()
    for phi in ("Mallory", "Muster", "Rossi", "PID-"):
        assert phi not in log


def make_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def delivered(service) -> int:
    with service.session() as session:
        return len(queries.results(session, "delivered"))


def test_chromium_is_installed_by_make_install():
    assert shutil.which("chromium") or not os.environ.get("CI"), "make install adds chromium"
