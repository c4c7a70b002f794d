"""Reference tables: parsing, validation messages, T/Z-scores, WHO category, omissions."""

import importlib.util
import sys
from pathlib import Path

import pytest

from analysis.reference import load_reference_tables, parse_reference_csv, who_category

REPO = Path(__file__).resolve().parents[2]
HEADER = "sex,age_min,age_max,mean_g_cm2,sd_g_cm2,kind,source,derived\n"


SETS = ("black2001", "wilczek2013", "sweden2013", "african_american2005")


def _load(name: str):
    return load_reference_tables([(REPO / "config/reference" / f"{name}.csv").read_text()], name=name)


@pytest.fixture(scope="module")
def shipped():
    return _load("black2001")


def test_shipped_tables_are_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("reference_tables", REPO / "tools/reference_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_tables"] = module
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0
    assert sorted(p.stem for p in (REPO / "config/reference").glob("*.csv")) == sorted(SETS)


def test_shipped_default_is_the_us_young_adult_female_reference(shipped):
    row = shipped.young_adult("F")
    assert (row.mean_g_cm2, row.sd_g_cm2, row.derived, row.provisional, row.n) == (0.598, 0.034, False, False, "832")
    assert "Black" in row.source and "abstract" in row.where
    assert shipped.name == "US women (Black 2001)"


@pytest.mark.parametrize("name", SETS)
def test_every_set_covers_both_sexes_20_to_90_and_marks_models_provisional(name):
    tables = _load(name)
    for sex in ("F", "M"):
        assert tables.young_adult(sex) is not None
        for age in (20, 37.5, 45, 62, 70, 89.9, 90, 90.9):
            row = tables.age_matched(sex, age)
            assert row is not None and row.provisional and row.derived and row.derivation
    male = tables.young_adult("M")
    assert male.provisional and male.mean_g_cm2 == pytest.approx(tables.young_adult("F").mean_g_cm2 * 1.128, abs=1e-4)
    assert tables.provisional


def test_wilczek_anchor_reproduces_the_papers_worked_examples():
    """Wilczek 2013 Fig. 1: 0.64 -> T +1.18, 0.49 -> -1.90, 0.41 -> -3.70 (within 0.1 T)."""
    tables = _load("wilczek2013")
    row = tables.young_adult("F")
    assert row.derived and not row.provisional and "least-squares" in row.derivation
    for bmd, t in ((0.64, 1.18), (0.49, -1.90), (0.41, -3.70)):
        assert tables.scores(bmd, "F", 62.0).t_score == pytest.approx(t, abs=0.1)
    # The point: against Black 2001 the same 0.49 reads about 1.3 lower.
    assert _load("black2001").scores(0.49, "F", 62.0).t_score == pytest.approx(-3.18, abs=0.01)


def test_age_matched_model_follows_the_documented_decline(shipped):
    f45, f62, f90 = (shipped.age_matched("F", a).mean_g_cm2 for a in (40, 62, 90))
    assert f45 == pytest.approx(0.598)
    assert f62 == pytest.approx(0.598 * 0.992 ** (62.5 - 45), abs=1e-4)
    assert f90 == pytest.approx(0.598 * 0.992 ** (87.5 - 45), abs=1e-4)
    assert shipped.age_matched("M", 70).mean_g_cm2 == pytest.approx(shipped.age_matched("F", 70).mean_g_cm2 * 1.128, abs=2e-4)


def test_woman_62_and_man_70_get_t_and_z_marked_provisional(shipped):
    w = shipped.scores(0.50, "F", 62.0)
    assert w.t_score == pytest.approx((0.50 - 0.598) / 0.034)
    assert w.z_score == pytest.approx((0.50 - shipped.age_matched("F", 62).mean_g_cm2) / 0.034)
    assert w.provisional and w.omitted_reason is None
    assert "US women (Black 2001)" in w.reference_name and "provisional" in w.reference_name
    m = shipped.scores(0.55, "M", 70.0)
    assert m.t_score == pytest.approx((0.55 - 0.6745) / 0.0384)
    assert m.z_score is not None and m.provisional and m.who_category == "osteoporosis"


def test_t_score_and_who_category(shipped):
    s = shipped.scores(0.598 - 2 * 0.034, "F", 61.0)
    assert s.t_score == pytest.approx(-2.0)
    assert s.who_category == "osteopenia"
    assert s.young_adult.mean_g_cm2 == 0.598


@pytest.mark.parametrize("t, category", [(0.3, "normal"), (-1.0, "normal"), (-1.01, "osteopenia"),
                                         (-2.49, "osteopenia"), (-2.5, "osteoporosis"), (-4.0, "osteoporosis")])
def test_who_boundaries(t, category):
    assert who_category(t) == category


def test_missing_sex_or_a_table_without_men_omits_with_reason(shipped):
    s = shipped.scores(0.5, None, 60.0)
    assert s.t_score is None and s.z_score is None and s.who_category is None
    assert "sex" in s.omitted_reason
    women_only = load_reference_tables([HEADER + "F,30,46,0.598,0.034,young_adult,Black 2001,false\n"])
    m = women_only.scores(0.5, "M", 60.0)
    assert m.t_score is None and "men" in m.omitted_reason


def test_site_table_with_male_and_age_matched_rows():
    text = HEADER + (
        "F,30,46,0.598,0.034,young_adult,Black 2001,false\n"
        "M,30,50,0.67,0.04,young_adult,site cohort,true\n"
        "F,60,70,0.50,0.05,age_matched,site cohort,true\n"
    )
    tables = load_reference_tables([text])
    m = tables.scores(0.59, "M", 40.0)
    assert m.t_score == pytest.approx((0.59 - 0.67) / 0.04)
    assert "derived" in m.reference_name
    f = tables.scores(0.45, "F", 65.0)
    assert f.z_score == pytest.approx(-1.0)
    assert f.omitted_reason is None
    assert tables.scores(0.45, "F", 70.0).z_score is None  # age_max is exclusive
    nz = tables.scores(0.45, "F", None)
    assert nz.t_score is not None and nz.z_score is None and "age" in nz.omitted_reason


@pytest.mark.parametrize("body, words", [
    ("X,30,46,0.6,0.03,young_adult,s,false\n", "sex must be F or M"),
    ("F,46,30,0.6,0.03,young_adult,s,false\n", "age_min < age_max"),
    ("F,30,46,abc,0.03,young_adult,s,false\n", "mean_g_cm2 must be a number"),
    ("F,30,46,0.6,-0.03,young_adult,s,false\n", "sd_g_cm2"),
    ("F,30,46,0.6,0.03,peak,s,false\n", "kind must be"),
    ("F,30,46,0.6,0.03,young_adult,,false\n", "source is empty"),
    ("F,30,46,0.6,0.03,young_adult,s,maybe\n", "derived must be"),
    ("F,30,46,0.6,0.03\n", "fields"),
])
def test_invalid_rows_give_one_line_errors_naming_the_line(body, words):
    with pytest.raises(ValueError) as err:
        load_reference_tables(["# comment\n" + HEADER + body])
    msg = str(err.value)
    assert words in msg and "line 3" in msg and "\n" not in msg


@pytest.mark.parametrize("body, words", [
    ("F,30,46,0.6,0.03,young_adult,5,s,p,true,,false\n", "derivation is empty"),
    ("F,30,46,0.6,0.03,young_adult,5,s,p,false,,perhaps\n", "provisional must be"),
])
def test_provenance_columns_are_checked(body, words):
    header = "sex,age_min,age_max,mean_g_cm2,sd_g_cm2,kind,n,source,where,derived,derivation,provisional\n"
    with pytest.raises(ValueError) as err:
        load_reference_tables(["# comment\n" + header + body])
    assert words in str(err.value) and "line 3" in str(err.value)


def test_missing_column_and_ambiguous_tables_are_rejected():
    with pytest.raises(ValueError, match="missing column"):
        load_reference_tables(["sex,age_min,mean_g_cm2\nF,30,0.6\n"])
    two = HEADER + "F,30,46,0.598,0.034,young_adult,a,false\n"
    with pytest.raises(ValueError, match="young_adult rows"):
        load_reference_tables([two, two])
    overlap = HEADER + "F,50,60,0.55,0.05,age_matched,a,true\nF,55,65,0.52,0.05,age_matched,a,true\n"
    with pytest.raises(ValueError, match="overlap"):
        load_reference_tables([overlap])
