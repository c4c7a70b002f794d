"""OHIF v3 opens our SR: the three ROIs and the DXR-BMD group are drawn with their labels, no error.

The built viewer comes from the ``@ohif/app`` npm tarball (``make ohif``), is served with a
same-origin proxy to a real Orthanc's DICOMweb, and is driven by Playwright for Python in
Debian's headless chromium (``executable_path``). The screenshot is kept in ``out/ohif/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import analysis
from node.reference import load_reference_dir
from node.report import OutputOptions, build_study_outputs
from tests.integration.ohif_server import OHIF_DIST, REPO, OhifServer
from tests.integration.servers import CHROMIUM, OrthancServer, browser_missing
from tests.node.outputs_inputs import hand_dataset, save

SHOT_DIR = REPO / "out" / "ohif"


def _requirements() -> str | None:
    if not (OHIF_DIST / "index.html").is_file():
        return f"the OHIF app is not unpacked in {OHIF_DIST} (make ohif)"
    return browser_missing()


@pytest.fixture(scope="module")
def study_in_orthanc(tmp_path_factory):
    why = _requirements()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("ohif")
    orthanc = OrthancServer(work / "orthanc", node_aet=None, dicomweb=True)
    orthanc.start()
    reference = load_reference_dir(REPO / "config" / "reference", "black2001")
    ds, _ = hand_dataset(laterality="L", patient_name="Ohif^Test")
    ds.PatientSex, ds.PatientAge = "F", "062Y"
    result = analysis.analyse(ds, reference=reference)
    assert result.status == "ok" and result.t_score is not None
    outputs = build_study_outputs([(ds, result)], uid_seed="ohif/1", options=OutputOptions(reference=reference))
    for k, item in enumerate([ds] + outputs):
        orthanc.upload(save(item, work / f"{k}.dcm"))
    try:
        yield orthanc, str(ds.StudyInstanceUID)
    finally:
        orthanc.stop()


def test_ohif_draws_the_sr_with_its_labels(study_in_orthanc):
    from playwright.sync_api import sync_playwright

    orthanc, study_uid = study_in_orthanc
    SHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SHOT_DIR / "ohif-sr.png"
    page_errors: list[str] = []
    with OhifServer(OHIF_DIST, orthanc.url) as web, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            has_label = ("() => [...document.querySelectorAll('svg text')]"
                         ".some(t => t.textContent.includes('DXR-BMD'))")
            # On a loaded machine the SR viewport's first render can miss the annotation layer (seen
            # under a parallel test run): open the viewer afresh, up to three times, before failing.
            for attempt in range(3):
                page.goto(f"{web.url}/viewer?StudyInstanceUIDs={study_uid}", wait_until="domcontentloaded")
                sr_label = page.locator('[data-cy="series-modality-label"]', has_text="SR").first
                sr_label.wait_for(timeout=120_000)
                page.wait_for_load_state("networkidle", timeout=120_000)  # the radiograph is in
                # The first-visit onboarding tour (Shepherd) covers the page: close it.
                page.keyboard.press("Escape")
                page.evaluate("() => document.querySelectorAll('.shepherd-modal-overlay-container, .shepherd-element')"
                              ".forEach(e => e.remove())")
                sr_label.dblclick()
                for _ in range(12):
                    page.wait_for_timeout(5000)
                    if page.evaluate(has_label):
                        break
                    page.mouse.move(800 + _ % 2 * 40, 500)  # a pointer event makes the viewport re-render
                if page.evaluate(has_label):
                    break
                page.screenshot(path=str(SHOT_DIR / f"ohif-failure-{attempt + 1}.png"))
            else:
                raise AssertionError("OHIF drew no DXR-BMD label in three tries; page text: "
                                     + page.inner_text("body")[:1500] + f"; page errors: {page_errors}")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shot))
            labels = page.evaluate("() => [...document.querySelectorAll('svg text')].map(t => t.textContent)")
            text = page.inner_text("body")
        finally:
            browser.close()
    print(f"OHIF screenshot: {shot}\nlabels: {labels}")
    assert "Something went wrong" not in text, text[:2000]
    joined = " ".join(labels)
    assert "DXR-BMD" in joined and "T-score" in joined, labels
    assert sum("cortical thickness" in t.lower() for t in labels) >= 3, labels
    # The three bones are labelled apart (the first finding site is the bone itself).
    for bone in ("Second metacarpal", "Third metacarpal", "Fourth metacarpal"):
        assert any(bone in t for t in labels), (bone, labels)
    assert not any(": 0 " in t or t.endswith(": 0") for t in labels), labels  # no zero shown as a value
