"""``make sample-report``: a phantom study's SR as HTML (dsr2html) and its SC picture as PNG.

Writes ``out/sample_report.html``, ``out/sample_report.png`` and the DICOM objects themselves
(``out/sample_report_sr.dcm``, ``out/sample_report_sc.dcm``). The study is a PA and a lateral
view of a phantom left hand; the PA is analysed by the engine when it measures it, otherwise
(engine not yet able to) by the phantom's known geometry, which the script then says.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import analysis  # noqa: E402
from node.report import OutputOptions, build_study_outputs  # noqa: E402
from tests.node.outputs_inputs import result_from_truth  # noqa: E402
from tests.phantom import make_dataset, make_hand  # noqa: E402


def _reference():
    """The shipped default reference set (config/reference/black2001.csv), as the node loads it."""
    from node.reference import DEFAULT_TABLE, load_reference_dir

    return load_reference_dir(REPO / "config" / "reference", DEFAULT_TABLE)


def main(out_dir: Path = REPO / "out") -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    image, truth = make_hand(seed=4, spacing_mm=0.1, laterality="L", cortical_scale=0.85)
    pa = make_dataset(image, truth, modality="DX", photometric="MONOCHROME1", spacing_attribute="ImagerPixelSpacing",
                      patient_name="Phantom^Hannelore", patient_id="PHANTOM-0042", age="067Y", sex="F",
                      study_uid=study, charset="ISO_IR 100")
    lat_image, lat_truth = make_hand(seed=4, spacing_mm=0.1, laterality="L", view="lateral")
    lateral = make_dataset(lat_image, lat_truth, modality="DX", photometric="MONOCHROME1",
                           spacing_attribute="ImagerPixelSpacing", patient_name="Phantom^Hannelore",
                           patient_id="PHANTOM-0042", age="067Y", sex="F", study_uid=study, charset="ISO_IR 100")
    lateral.InstanceNumber = 2
    lateral.ViewPosition = ""
    reference = _reference()
    results = [analysis.analyse(ds, reference=reference) for ds in (pa, lateral)]
    if results[0].status != "ok":
        print(f"sample-report: the engine did not measure the phantom PA ({results[0].reason}); "
              "using the phantom's known geometry for the numbers")
        measured = result_from_truth(truth, laterality="L", pixel_spacing_source="ImagerPixelSpacing")
        scores = reference.scores(measured.dxr_bmd_g_cm2, "F", 67.0)
        results[0] = measured.replace(
            age_years=67.0, t_score=scores.t_score, z_score=scores.z_score, who_category=scores.who_category,
            reference_name=scores.reference_name, scores_omitted_reason=scores.omitted_reason,
            reference_provisional=scores.provisional,
            reference_mean_g_cm2=scores.young_adult.mean_g_cm2 if scores.young_adult else None,
            reference_sd_g_cm2=scores.young_adult.sd_g_cm2 if scores.young_adult else None,
        )
    if results[1].status == "ok" or results[1].reason not in ("lateral_view", "oblique_view", "not_pa_hand"):
        print(f"sample-report: the engine did not call the lateral view lateral ({results[1].reason})")
        results[1] = analysis.result.refused("lateral_view", laterality="L", view="lateral")
    outputs = build_study_outputs(list(zip((pa, lateral), results)), uid_seed=f"{study}/sample",
                                  options=OutputOptions(reference=reference))
    sr, sc = outputs
    sr_path, sc_path = out_dir / "sample_report_sr.dcm", out_dir / "sample_report_sc.dcm"
    sr.save_as(sr_path, enforce_file_format=True)
    sc.save_as(sc_path, enforce_file_format=True)
    Image.fromarray(np.asarray(sc.pixel_array, dtype=np.uint8), mode="RGB").save(out_dir / "sample_report.png")
    dsr2html = shutil.which("dsr2html")
    if dsr2html is None:
        print("sample-report: dsr2html (DCMTK) is not installed; run `make debs`", file=sys.stderr)
        return 1
    subprocess.run([dsr2html, str(sr_path), str(out_dir / "sample_report.html")], check=True)
    print(f"sample-report: wrote {out_dir / 'sample_report.html'} and {out_dir / 'sample_report.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
