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


def test_a_patient_under_18_by_the_header_is_refused_immature_whatever_the_hand_looks_like():
    """An adolescent's hand can look adult at a glance; the header's age decides first."""
    image, truth = make_hand(seed=21, spacing_mm=0.15, view="PA")
    young = analysis.analyse(make_dataset(image, truth, modality="DX", age="015Y"))
    assert (young.status, young.reason) == ("refused", "immature_skeleton")
    assert "15 years old" in young.message and young.bones_measured == 0
    by_birth_date = analysis.analyse(make_dataset(image, truth, modality="DX", age=None, birth_date="20100601",
                                                  study_date="20260101"))
    assert by_birth_date.reason == "immature_skeleton"
    adult = analysis.analyse(make_dataset(image, truth, modality="DX", age="018Y"))
    assert adult.status == "ok" and adult.bones_measured == 3
