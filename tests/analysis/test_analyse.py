"""analysis.analyse on whole DICOM datasets: what the header claims versus what the image shows."""

import analysis
from tests.phantom import make_dataset, make_hand


def test_header_says_pa_but_image_is_lateral_the_image_wins():
    """Issue 4: a lateral radiograph tagged ViewPosition PA (and a PA view code) is refused as lateral."""
    image, truth = make_hand(seed=21, spacing_mm=0.15, view="lateral")
    ds = make_dataset(image, truth, modality="DX")
    assert ds.ViewPosition == "PA" and ds.ViewCodeSequence[0].CodeMeaning == "postero-anterior"
    result = analysis.analyse(ds)
    assert (result.status, result.reason) == ("refused", "lateral_view")
    assert result.bones_measured == 0 and result.dxr_bmd_g_cm2 is None


def test_header_pa_and_image_pa_is_measured():
    """The same header on a PA image of the same hand is measured: the refusal above comes from the image."""
    image, truth = make_hand(seed=21, spacing_mm=0.15, view="PA")
    result = analysis.analyse(make_dataset(image, truth, modality="DX"))
    assert result.status == "ok" and result.view == "PA" and result.bones_measured == 3
