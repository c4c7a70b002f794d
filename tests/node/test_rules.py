"""The declarative filter: default decisions, custom rules, and `dxr-node rules test`."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from node.cli import main
from node.config import load_config
from node.receive.rules import evaluate
from tests.dicom_samples import make_image_dataset, make_sr_dataset, save

from tests.node.node_helpers import make_config, write_config


@pytest.fixture(scope="module")
def default_rules(tmp_path_factory):
    return make_config(tmp_path_factory.mktemp("rules")).rules


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # lower-case on purpose
@pytest.mark.parametrize(
    ("modality", "body_part", "analyse"),
    [("CR", "HAND", True), ("DX", "WRIST", True), ("CR", "", True), ("dx", "hand", True),
     ("CR", "CHEST", False), ("CT", "HAND", False), ("MG", "", False)],
)
def test_default_rule_on_modality_and_body_part(default_rules, modality, body_part, analyse):
    ds = make_image_dataset(rows=8, columns=8, body_part=body_part)
    ds.Modality = modality
    decision = evaluate(default_rules, ds)
    assert decision.analyse is analyse
    if analyse:
        assert decision.rule == "hand-wrist-radiograph"
    else:
        assert decision.rule is None
        assert "matches no analyse rule" in decision.reason


def test_absent_body_part_counts_as_empty(default_rules):
    ds = make_image_dataset(rows=8, columns=8)
    del ds.BodyPartExamined
    assert evaluate(default_rules, ds).analyse


def test_drop_reason_names_the_keyword_and_value(default_rules):
    ds = make_image_dataset(rows=8, columns=8, body_part="CHEST")
    reason = evaluate(default_rules, ds).reason
    assert 'BodyPartExamined "CHEST" is not one of HAND, WRIST, ""' in reason


def test_sr_and_our_own_outputs_are_never_analysed(default_rules):
    sr = make_sr_dataset()
    decision = evaluate(default_rules, sr)
    assert (decision.analyse, decision.rule) == (False, "sr-or-sc")
    own = make_image_dataset(rows=8, columns=8)
    own.Manufacturer = "DXR Node project"
    decision = evaluate(default_rules, own)
    assert (decision.analyse, decision.rule) == (False, "own-output")
    own.Manufacturer = "DXR Node test phantom"  # a test input, not an output of ours
    assert evaluate(default_rules, own).analyse


def test_custom_rules_with_wildcards(tmp_path):
    cfg = make_config(
        tmp_path,
        '[[rules.analyse]]\nname = "any-station-HX"\nStationName = ["HX*"]\n'
        '[[rules.analyse]]\nname = "dx"\nModality = "DX"\n'
        '[[rules.ignore]]\nname = "test-patients"\nPatientID = ["TEST*"]\n',
    )
    ds = make_image_dataset(rows=8, columns=8, patient_id="P1")
    ds.StationName = "hx-room-2"
    assert evaluate(cfg.rules, ds).rule == "any-station-HX"
    ds.StationName = "OTHER"
    assert not evaluate(cfg.rules, ds).analyse  # CR, not DX
    ds.Modality = "DX"
    assert evaluate(cfg.rules, ds).rule == "dx"
    ds.PatientID = "TEST9"
    decision = evaluate(cfg.rules, ds)
    assert (decision.analyse, decision.rule) == (False, "test-patients")
    assert "TEST9" not in decision.reason, "patient data never reaches logs or explanations"


def test_rules_test_verb_explains_the_decision(tmp_path, capsys):
    cfg_path = write_config(tmp_path / "cfg")
    hand = save(make_image_dataset(rows=8, columns=8), tmp_path / "hand.dcm")
    chest = save(make_image_dataset(rows=8, columns=8, body_part="CHEST"), tmp_path / "chest.dcm")
    no_study = make_image_dataset(rows=8, columns=8)
    del no_study.StudyInstanceUID
    no_study_path = save(no_study, tmp_path / "nostudy.dcm")

    assert main(["rules", "test", str(hand), "--config", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ANALYSE ") and "hand-wrist-radiograph" in out
    assert main(["rules", "test", str(chest), "--config", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DROP ") and 'BodyPartExamined "CHEST"' in out
    assert main(["rules", "test", str(no_study_path), "--config", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("REFUSE ") and "StudyInstanceUID" in out

    assert main(["rules", "test", str(tmp_path / "missing.dcm"), "--config", str(cfg_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    assert main(["rules", "test", str(cfg_path), "--config", str(cfg_path)]) == 1
    assert capsys.readouterr().err == f"dxr-node: error: {cfg_path}: not a DICOM file\n"


def test_rules_load_from_the_shipped_config():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "config" / "node.toml")
    ds = make_image_dataset(rows=8, columns=8, study_uid=generate_uid())
    assert evaluate(cfg.rules, ds).analyse
