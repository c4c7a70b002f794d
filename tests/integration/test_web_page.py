"""The web page in a real headless chromium (Playwright, Debian's chromium): sign-in, request, result, picture, retry.

A real Orthanc (``archive``) holds a hand study before the node starts; the page's form asks for
it by accession (C-FIND + C-MOVE), the node analyses it and sends SR and SC back to the archive
and to a second destination that is down, so those exports fail; a second Orthanc is then started
on that destination's port and the page's Retry buttons deliver them. Screenshots go to ``out/web/``.
"""

from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.integration.servers import HOST, RESULT_TIMEOUT_SECONDS, OrthancServer, free_port, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPO = Path(__file__).resolve().parents[2]
SHOT_DIR = REPO / "out" / "web"
TOKEN = "web-test-" + uuid.uuid4().hex


def _requirements() -> str | None:
    if CHROMIUM is None:
        return "Debian chromium is not installed (make debs)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed (make venv)"
    return None


@pytest.fixture
def archive(tmp_path: Path):
    server = OrthancServer(tmp_path / "archive", aet="ARCHIVE", node_aet=None)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _get(url: str, token: str | None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_page_signs_in_requests_shows_the_result_and_retries(archive, node_factory, write_phantom_study, tmp_path):
    why = _requirements()
    if why:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    accession = "WEB" + uuid.uuid4().hex[:8].upper()
    study_uid, files = write_phantom_study(1, accession=accession, patient_id="WEB-PATIENT")
    for path in files:
        archive.upload(path)
    later_port = free_port()  # a destination that is down until the retry
    http_port = free_port()
    node = node_factory(sources=[], destinations=[archive.as_destination("archive"),
                                                  {"name": "later", "ae_title": "LATER", "host": HOST,
                                                   "port": later_port}],
                        export={"max_attempts": 1},
                        extra={"pacs": [{"name": "archive", "ae_title": "ARCHIVE", "host": HOST,
                                         "port": archive.dicom_port}],
                               "http": {"bind": HOST, "port": http_port, "token": TOKEN},
                               "reference": {"dir": str(REPO / "config" / "reference"), "table": "black2001"}})
    node.start()
    archive.set_modality("dxrnode", node.ae_title, node.port)
    base = f"http://{HOST}:{http_port}"
    SHOT_DIR.mkdir(parents=True, exist_ok=True)

    # The bearer token works without a session; a wrong or missing one gets the login page.
    assert _get(base + "/", TOKEN)[0] == 200 and "Recent studies" in _get(base + "/", TOKEN)[1]
    for token in (None, "wrong"):
        status, body = _get(base + "/", token)
        assert status == 401 and 'action="/login"' in body and "Recent studies" not in body

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            response = page.goto(base + "/")
            assert response.status == 401 and page.locator("input[name=token]").is_visible()
            page.screenshot(path=str(SHOT_DIR / "login.png"))
            page.fill("input[name=token]", "not-the-token")
            page.click("button[type=submit]")
            assert "not the node's token" in page.content() and page.locator("input[name=token]").is_visible()
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            assert page.locator("#studies").is_visible()
            assert "No study received yet" in page.content()

            # "Analyse an earlier study" retrieves it from the archive.
            page.select_option("select[name=by]", "accession")
            page.fill("input[name=value]", accession)
            page.click("#request button[type=submit]")
            notice = page.locator("#notice").inner_text()
            assert f"study {study_uid} (accession {accession}" in notice and "1 instance(s) retrieved" in notice
            page.screenshot(path=str(SHOT_DIR / "request.png"))

            archive.wait_for_srs(study_uid)
            wait_until(lambda: len([e for e in node.exports(study_uid) if e["destination"] == "later"
                                    and e["state"] == "failed"]) == 2,
                       RESULT_TIMEOUT_SECONDS, what="two failed exports to 'later'")
            wait_until(lambda: [e["state"] for e in node.exports(study_uid) if e["destination"] == "archive"]
                       == ["sent", "sent"], 60, what="SR and SC sent to the archive")
            page.goto(base + "/")
            row = page.locator(f"tr.study[data-study='{study_uid}']")
            assert "analysed" in row.inner_text() and "DXR-BMD" in row.inner_text()
            assert re.search(r"left: DXR-BMD 0\.\d{3} g/cm², T -?\d+\.\d\d, Z -?\d+\.\d\d, bones II III IV",
                             " ".join(row.inner_text().split())), row.inner_text()
            assert "WEB-PATIENT" in row.inner_text() and accession in row.inner_text()
            assert "archive: sent" in " ".join(row.inner_text().split()) and "later: failed" in " ".join(
                row.inner_text().split())
            assert page.locator("tr.failed-export").count() == 2
            assert "LATER" in page.locator("tr.destination[data-destination='later']").inner_text() or \
                   "connection" in page.locator("tr.destination[data-destination='later']").inner_text()
            page.screenshot(path=str(SHOT_DIR / "studies.png"), full_page=True)

            # The study page shows the result picture (the SC, 1920 x 1200, decoded to PNG).
            row.locator("a", has_text="picture").click()
            image = page.locator("img.picture").first
            image.wait_for()
            wait_until(lambda: page.evaluate("img => img.complete && img.naturalWidth", image.element_handle()) > 0,
                       30, what="the result picture to load")
            assert page.evaluate("img => [img.naturalWidth, img.naturalHeight]", image.element_handle()) == [1920, 1200]
            page.screenshot(path=str(SHOT_DIR / "study.png"), full_page=True)

            # A button press without the form token is refused (CSRF), even with the session cookie.
            forged = page.request.post(base + "/exports/1/retry", form={"x": "1"}, max_redirects=0)
            assert forged.status == 403

            # Retry: the destination comes up, each failed export's button sends it.
            later = OrthancServer(tmp_path / "later", aet="LATER", node_aet=None, dicom_port=later_port)
            later.start()
            try:
                page.goto(base + "/")
                for _ in range(2):
                    page.locator("tr.failed-export button").first.click()
                    assert "queued again" in page.locator("#notice").inner_text()
                wait_until(lambda: all(e["state"] == "sent" for e in node.exports(study_uid)),
                           60, what="every export sent after the retry")
                assert len(later.instances(study_uid)) == 2
                page.goto(base + "/")
                assert page.locator("tr.failed-export").count() == 0
                page.screenshot(path=str(SHOT_DIR / "after-retry.png"), full_page=True)
            finally:
                later.stop()
        finally:
            browser.close()
