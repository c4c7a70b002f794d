"""The web page in process (Starlette TestClient, real Store): sign-in, session cookie, CSRF, escaping,
and the result read back from a real SR. The browser test is tests/integration/test_web_page.py."""

from __future__ import annotations

import re
import time
from pathlib import Path
import warnings

import pytest

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its TestClient; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import analysis
from node.http.app import create_app
from node.reference import load_reference_dir
from node.report import OutputOptions, build_study_outputs
from node.spool import Store
from node.web.auth import SESSION_SECONDS, WebAuth
from node.web.results import sr_summary
from node.web.views import recent_studies
from tests.node.node_helpers import encode, make_config
from tests.node.outputs_inputs import hand_dataset, save

TOKEN = "web-unit-token"
HTTP = f'[http]\nbind = "127.0.0.1"\nport = 8080\ntoken = "{TOKEN}"\n'


@pytest.fixture
def client(tmp_path):
    config = make_config(tmp_path, HTTP)
    store = Store(config.data_dir)
    with TestClient(create_app(config, store), raise_server_exceptions=False, follow_redirects=False) as c:
        yield c
    store.close()


def _form_token(html: str) -> str:
    return re.search(r'name="form_token" value="([0-9a-f]+)"', html).group(1)


def test_without_a_valid_token_every_page_is_the_login_form(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for path in ("/", "/studies/1.2.3", "/studies/1.2.3/picture/0.png"):
            r = client.get(path, headers=headers)
            assert r.status_code == 401 and 'action="/login"' in r.text, (path, headers)
    client.cookies.set("dxr_session", f"{int(time.time())}.{'0' * 64}")  # forged signature
    assert client.get("/").status_code == 401
    ok = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and "Recent studies (0)" in ok.text
    assert ok.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in ok.headers["content-security-policy"]


def test_login_sets_a_strict_http_only_session_cookie(client):
    wrong = client.post("/login", data={"token": "nope"})
    assert wrong.status_code == 401 and "not the node&#39;s token" in wrong.text and "set-cookie" not in wrong.headers
    right = client.post("/login", data={"token": TOKEN})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=43200" in cookie
    assert client.get("/").status_code == 200
    out = client.post("/logout")
    assert out.status_code == 303 and client.get("/").status_code == 401


def test_buttons_need_the_form_token_of_the_session(client):
    client.post("/login", data={"token": TOKEN})
    page = client.get("/").text
    token = _form_token(page)
    for form in ({}, {"form_token": "0" * 64}):
        refused = client.post("/exports/7/retry", data=form)
        assert refused.status_code == 403 and 'action="/login"' in refused.text
    accepted = client.post("/exports/7/retry", data={"form_token": token})
    assert accepted.status_code == 303 and "No+export+E7" in accepted.headers["location"]
    asked = client.post("/request", data={"form_token": token, "by": "accession", "value": "A1"})
    assert "no+%5B%5Bpacs%5D%5D+configured" in asked.headers["location"]
    # A bearer-token client (a script) needs no form token.
    bearer = TestClient(client.app, follow_redirects=False)
    assert bearer.post("/exports/7/retry", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 303


def test_messages_are_escaped(client):
    page = client.get("/?error=<script>alert(1)</script>", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_session_ends_after_a_working_day_or_a_new_token():
    auth = WebAuth(TOKEN, secure=False)
    now = 1_800_000_000
    session = auth.new_session(now)
    assert auth.session_valid(session, now + SESSION_SECONDS - 1)
    assert not auth.session_valid(session, now + SESSION_SECONDS + 1)
    assert not WebAuth("another", secure=False).session_valid(session, now)


def test_the_result_is_read_back_from_the_sr(tmp_path):
    reference = load_reference_dir(Path("config/reference"), "black2001")
    ds, _ = hand_dataset(laterality="L")
    result = analysis.analyse(ds, reference=reference)
    outputs = build_study_outputs([(ds, result)], uid_seed="web/1", options=OutputOptions(reference=reference))
    summary = sr_summary(save(next(o for o in outputs if o.Modality == "SR"), tmp_path / "sr.dcm"))
    assert len(summary.hands) == 1 and not summary.refusals
    hand = summary.hands[0]
    assert (hand.hand, hand.bones) == ("left", ["II", "III", "IV"])
    assert hand.bmd == pytest.approx(result.dxr_bmd_g_cm2, abs=1e-3)
    assert hand.t_score == pytest.approx(result.t_score, abs=0.01) and hand.z_score == pytest.approx(result.z_score, abs=0.01)

    refused, _ = hand_dataset(laterality="L")
    del refused.PixelSpacing
    outcome = analysis.analyse(refused, reference=reference)
    sr = next(o for o in build_study_outputs([(refused, outcome)], uid_seed="web/2",
                                             options=OutputOptions(reference=reference)) if o.Modality == "SR")
    summary = sr_summary(save(sr, tmp_path / "refused.dcm"))
    assert summary.hands == [] and summary.refusals == ["No pixel spacing"]
    assert sr_summary(tmp_path / "missing.dcm") is None


def test_a_refused_study_shows_its_reason_and_its_failed_export(tmp_path):
    """The page's rows from a real Store: receiving, then refused (reason from the SR), export failed."""
    config = make_config(tmp_path, HTTP)
    store = Store(config.data_dir)
    reference = load_reference_dir(Path("config/reference"), "black2001")
    ds, _ = hand_dataset(laterality="L", patient_name="Web^Row")
    del ds.PixelSpacing
    study = str(ds.StudyInstanceUID)
    store.store_instance(encode(ds), sop_instance_uid=str(ds.SOPInstanceUID), study_instance_uid=study)
    [row] = recent_studies(store)
    assert (row.state, row.instances, row.accession) == ("receiving", 1, str(ds.AccessionNumber))
    [job] = store.complete_due_studies(0.0)
    assert recent_studies(store)[0].state == "queued"
    store.claim_job(1)
    sr = next(o for o in build_study_outputs([(ds, analysis.analyse(ds, reference=reference))], uid_seed="w/1",
                                             options=OutputOptions(reference=reference)) if o.Modality == "SR")
    path = save(sr, store.outputs_dir / "sr.dcm")
    store.finish_job(job.id, [(str(sr.SOPInstanceUID), str(sr.SOPClassUID), "SR", str(path.relative_to(store.data_dir)))],
                     ["outbox"])
    [claimed] = store.claim_due_exports()["outbox"]
    store.export_attempt_failed(claimed.id, "disk full", max_attempts=1, delay_seconds=lambda n: 0)
    [row] = recent_studies(store)
    assert (row.state, row.detail, row.exports) == ("refused", "No pixel spacing", {"outbox": "failed: disk full"})
    store.close()


def test_wrong_tokens_from_one_address_are_throttled(client):
    """Ten wrong tokens in ten minutes: the form answers 429 with Retry-After, even to the right
    token, until the window has passed; nothing is signed in meanwhile."""
    from node.web.auth import LOGIN_WINDOW_SECONDS, MAX_FAILED_LOGINS

    for _ in range(MAX_FAILED_LOGINS):
        assert client.post("/login", data={"token": "guess"}).status_code == 401
    blocked = client.post("/login", data={"token": TOKEN})
    assert blocked.status_code == 429 and "set-cookie" not in blocked.headers
    assert 0 < int(blocked.headers["retry-after"]) <= LOGIN_WINDOW_SECONDS
    assert "Too many wrong tokens" in blocked.text
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200  # scripts unaffected


def test_login_throttle_window_and_reset():
    from node.web.auth import LOGIN_WINDOW_SECONDS, MAX_FAILED_LOGINS, LoginThrottle

    throttle = LoginThrottle()
    for k in range(MAX_FAILED_LOGINS - 1):
        throttle.failed("10.0.0.1", now=100.0 + k)
    assert throttle.wait_seconds("10.0.0.1", now=200.0) == 0.0  # one try left
    throttle.failed("10.0.0.1", now=200.0)
    assert throttle.wait_seconds("10.0.0.1", now=200.0) == pytest.approx(LOGIN_WINDOW_SECONDS - 100.0)
    assert throttle.wait_seconds("10.0.0.2", now=200.0) == 0.0  # per address
    assert throttle.wait_seconds("10.0.0.1", now=100.0 + LOGIN_WINDOW_SECONDS + 0.5) == 0.0  # oldest left
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1", now=300.0)
    assert throttle.wait_seconds("10.0.0.1", now=300.0) == 0.0
