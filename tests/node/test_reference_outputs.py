"""A woman of 62 and a man of 70 (phantoms): DXR-BMD, T and Z with the reference named and marked
provisional in the JSON, the SR and the picture (issue: reference data with provenance)."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import pytest

import analysis
from node.cli import main
from node.reference import load_reference_dir
from node.report import OutputOptions, build_study_outputs, codes, picture
from tests.node.outputs_inputs import hand_dataset, save, walk_content

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference():
    return load_reference_dir(REPO / "config" / "reference", "black2001")


@pytest.mark.parametrize("sex, age, laterality, seed", [("F", "062Y", "L", 0), ("M", "070Y", "R", 1)])
def test_t_and_z_with_the_reference_named_and_provisional_everywhere(reference, sex, age, laterality, seed, tmp_path,
                                                                     capsys):
    ds, _ = hand_dataset(laterality=laterality, seed=seed)
    ds.PatientSex, ds.PatientAge = sex, age
    result = analysis.analyse(ds, reference=reference)
    assert result.status == "ok"

    # JSON (what dxr-node analyze prints)
    doc = result.to_json()
    assert doc["dxr_bmd_g_cm2"] and doc["t_score"] is not None and doc["z_score"] is not None
    assert doc["reference"].startswith("US women (Black 2001)") and doc["reference_provisional"] is True
    young = reference.young_adult(sex)
    assert doc["t_score"] == pytest.approx((result.dxr_bmd_g_cm2 - young.mean_g_cm2) / young.sd_g_cm2, abs=1e-6)

    # SR
    sr_ds, _sc = build_study_outputs([(ds, result)], uid_seed=f"ref/{sex}", options=OutputOptions(reference=reference))
    report = hd.sr.MeasurementReport.from_sequence([hd.sr.srread(save(sr_ds, tmp_path / "sr.dcm"))])
    (combined,) = [g for g in report.get_planar_roi_measurement_groups() if g.tracking_identifier.startswith("DXR")]
    names = [m.name.meaning for m in combined.get_measurements()]
    assert names[:3] == ["DXR-BMD", "T-score", "Z-score"]
    (status,) = combined.get_qualitative_evaluations(name=codes.REFERENCE_STATUS)
    assert status.value == codes.PROVISIONAL_REFERENCE
    texts = " ".join(str(i.TextValue) for i in walk_content(sr_ds) if i.get("ValueType") == "TEXT")
    assert "US women (Black 2001)" in texts and "PROVISIONAL" in texts

    # picture (the same words it draws)
    lines = picture.summary_lines(result)
    assert any("T-score" in ln and "Z-score" in ln for ln in lines)
    assert any("PROVISIONAL" in ln for ln in lines)


def test_research_cli_prints_t_z_and_the_reference(tmp_path, capsys):
    ds, _ = hand_dataset(laterality="L")
    path = save(ds, tmp_path / "hand.dcm")
    assert main(["analyze", str(path), "--sex", "M", "--age", "70", "--no-progress"]) == 0
    (doc,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert doc["t_score"] is not None and doc["z_score"] is not None and doc["reference_provisional"] is True
    assert main(["analyze", str(path), "--sex", "F", "--age", "62", "--reference", "wilczek2013",
                 "--no-progress"]) == 0
    (doc,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert doc["reference"].startswith("Sectra anchor (Wilczek 2013)")
