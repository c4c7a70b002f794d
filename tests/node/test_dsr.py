"""DCMTK reads the SR: dsrdump without a warning, dsr2html renders the numbers."""

from __future__ import annotations

import html

import pytest
from pydicom.valuerep import DS

from node.report import build_study_outputs
from tests.node.outputs_inputs import hand_dataset, require_tool, result_from_truth, run_tool, save, view_refusal


def _ds_text(value: float, decimals: int) -> str:
    """How the SR writes a number (highdicom DS, auto-formatted) after rounding to its precision."""
    return str(DS(round(value, decimals), auto_format=True))


@pytest.fixture(scope="module", params=["ISO_IR 100", "ISO_IR 192"])
def measured_sr(request, tmp_path_factory):
    ds, truth = hand_dataset(charset=request.param, patient_name="Müller^Jürgen", photometric="MONOCHROME1")
    result = result_from_truth(truth)
    sr = build_study_outputs([(ds, result)], uid_seed=f"dsr/{request.param}")[0]
    return save(sr, tmp_path_factory.mktemp("dsr") / "sr.dcm"), result


# DCMTK 3.6.7 prints this for any UTF-8 dataset, even with -Dv: its VR checker cannot check
# ISO_IR 192 strings. It is about the tool, not the SR, so it is the one message tolerated.
DCMTK_UTF8_NOTICE = "W: The VR checker does not support this Specific Character Set: ISO_IR 192"


def _dsrdump_clean(path) -> str:
    run = run_tool(require_tool("dsrdump"), path)
    assert run.returncode == 0, run.stderr
    problems = [line for line in (run.stdout + run.stderr).splitlines()
                if line.startswith(("W:", "E:", "F:")) and line != DCMTK_UTF8_NOTICE]
    assert problems == [], "\n".join(problems)
    return run.stdout


def test_dsrdump_reads_the_sr_without_warnings(measured_sr):
    path, result = measured_sr
    text = _dsrdump_clean(path)
    assert "Imaging Measurement Report" in text
    assert "0749T" in text
    assert "Metacarpal cortical thickness" in text


def test_dsr2html_renders_each_cortical_thickness_and_the_bmd(measured_sr, tmp_path):
    path, result = measured_sr
    out = tmp_path / "sr.html"
    run = run_tool(require_tool("dsr2html"), path, out)
    assert run.returncode == 0, run.stderr
    page = html.unescape(out.read_text(encoding="utf-8", errors="replace"))
    for name in ("II", "III", "IV"):
        bone = result.bones[name]
        assert f"Metacarpal {name}" in page
        assert _ds_text(bone.cortical_thickness_mm, 3) in page, name
    assert _ds_text(result.dxr_bmd_g_cm2, 4) in page
    assert "DXR-BMD" in page
    # Every number the SR carries: per bone W, MCI, VPA; combined T, Z, BHI, mean MCI/T/W; TID 311.
    for name in ("II", "III", "IV"):
        bone = result.bones[name]
        for value, decimals in ((bone.outer_width_mm, 3), (bone.mci, 4), (bone.vpa_mm, 3)):
            assert _ds_text(value, decimals) in page, (name, value)
    for value, decimals in ((result.t_score, 2), (result.z_score, 2), (result.bhi, 3), (result.mci, 4),
                            (result.cortical_thickness_mm, 3), (result.outer_width_mm, 3),
                            (result.reference_mean_g_cm2, 4), (result.reference_sd_g_cm2, 4)):
        assert _ds_text(value, decimals) in page, value
    assert "T-score" in page and "Z-score" in page and "DXR screening category" in page


def test_dsrdump_reads_the_refusal_sr(tmp_path):
    lateral, _ = hand_dataset(view="lateral")
    (sr,) = build_study_outputs([(lateral, view_refusal("lateral"))], uid_seed="dsr/refused")
    text = _dsrdump_clean(save(sr, tmp_path / "refusal.dcm"))
    assert "No measurement made" in text and "Lateral view" in text
    assert "0749T" not in text and "DXR-BMD analysis not performed" in text
