"""dciodvfy (dicom3tools) finds no error in the SR and SC, over the inputs a PACS sends.

dciodvfy exits 1 on any error; its warnings are printed (``pytest -rP``) for the notes.
"""

from __future__ import annotations

import pytest

from node.report import build_study_outputs
from tests.node.outputs_inputs import hand_dataset, require_tool, result_from_truth, run_tool, save, view_refusal

# A covering set: every value of each factor appears, without the full 16-way product.
CASES = [
    ("CR", "MONOCHROME1", "L", "ISO_IR 100", "Müller^Jürgen"),
    ("CR", "MONOCHROME2", "R", "ISO_IR 192", "Đặng^Thị Ngọc Ánh"),
    ("DX", "MONOCHROME1", "R", "ISO_IR 100", "Ørsted^Søren"),
    ("DX", "MONOCHROME2", "L", "ISO_IR 192", "Ünal^Zoë"),
    ("DX", "MONOCHROME2", None, "ISO_IR 100", "Unknown^Side"),
]


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error")]


def _check(path, label: str) -> None:
    run = run_tool(require_tool("dciodvfy"), path)
    text = run.stdout + run.stderr
    warnings = sorted({line for line in text.splitlines() if line.startswith("Warning")})
    print(f"{label}: dciodvfy exit {run.returncode}; distinct warnings: {warnings}")
    assert _errors(text) == [], f"{label}:\n{text}"
    assert run.returncode == 0, f"{label}:\n{text}"


@pytest.mark.parametrize("modality, photometric, laterality, charset, name", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2] or 'U'}-{c[3].replace(' ', '')}" for c in CASES])
def test_sr_and_sc_pass_dciodvfy(modality, photometric, laterality, charset, name, tmp_path):
    source, truth = hand_dataset(modality=modality, photometric=photometric, laterality=laterality,
                                 charset=charset, patient_name=name)
    outputs = build_study_outputs([(source, result_from_truth(truth, laterality=laterality))], uid_seed="dciodvfy")
    assert [o.Modality for o in outputs] == ["SR", "OT"]
    for output in outputs:
        _check(save(output, tmp_path / f"{output.Modality}.dcm"), f"{modality} {photometric} {output.Modality}")


def test_refusal_sr_passes_dciodvfy(tmp_path):
    lateral, _ = hand_dataset(view="lateral", modality="DX")
    (sr,) = build_study_outputs([(lateral, view_refusal("lateral"))], uid_seed="dciodvfy-refused")
    _check(save(sr, tmp_path / "refusal.dcm"), "refusal SR")


def test_full_featured_sr_passes_dciodvfy(tmp_path):
    """Three views, a reduced-service PA with orientation (TID 1603 descriptors), no scores, predecessors."""
    from pydicom.uid import generate_uid

    study = generate_uid()
    pa, truth = hand_dataset(modality="DX", study_uid=study)
    pa.PatientOrientation = ["P", "F"]  # with ImagerPixelSpacing: highdicom writes TID 1603 descriptors
    oblique, _ = hand_dataset(view="oblique", study_uid=study, instance_number=2)
    lateral, _ = hand_dataset(view="lateral", study_uid=study, instance_number=3)
    images = [(pa, result_from_truth(truth, refuse_bone="II", with_scores=False)),
              (oblique, view_refusal("oblique")), (lateral, view_refusal("lateral"))]
    outputs = build_study_outputs(images, uid_seed="dciodvfy-full", replaces=[generate_uid(), generate_uid()])
    assert [o.Modality for o in outputs] == ["SR", "OT"]
    assert "PredecessorDocumentsSequence" in outputs[0]
    for output in outputs:
        _check(save(output, tmp_path / f"{output.Modality}.dcm"), f"full {output.Modality}")
