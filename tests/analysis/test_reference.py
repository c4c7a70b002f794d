"""Reference tables: parsing, validation messages, T/Z-scores, WHO category, omissions."""

from pathlib import Path

import pytest

from analysis.reference import load_reference_tables, parse_reference_csv, who_category

REPO = Path(__file__).resolve().parents[2]
HEADER = "sex,age_min,age_max,mean_g_cm2,sd_g_cm2,kind,source,derived\n"


@pytest.fixture(scope="module")
def shipped():
    return load_reference_tables([p.read_text() for p in sorted((REPO / "config/reference").glob("*.csv"))])


def test_shipped_default_is_the_us_young_adult_female_reference(shipped):
    row = shipped.young_adult("F")
    assert (row.mean_g_cm2, row.sd_g_cm2, row.derived) == (0.598, 0.034, False)
    assert "Black" in row.source
    assert shipped.young_adult("M") is None


def test_alternative_swedish_table_parses_and_is_not_loaded_by_default(shipped):
    rows = parse_reference_csv((REPO / "config/reference/alternatives/young_adult_female_sweden.csv").read_text())
    assert [(r.mean_g_cm2, r.sd_g_cm2) for r in rows] == [(0.597, 0.050)]
    assert all(r.mean_g_cm2 != 0.597 for r in shipped.rows)


def test_t_score_and_who_category(shipped):
    s = shipped.scores(0.598 - 2 * 0.034, "F", 61.0)
    assert s.t_score == pytest.approx(-2.0)
    assert s.who_category == "osteopenia"
    assert s.z_score is None and "age-matched" in s.omitted_reason
    assert "Black" in s.reference_name


@pytest.mark.parametrize("t, category", [(0.3, "normal"), (-1.0, "normal"), (-1.01, "osteopenia"),
                                         (-2.49, "osteopenia"), (-2.5, "osteoporosis"), (-4.0, "osteoporosis")])
def test_who_boundaries(t, category):
    assert who_category(t) == category


def test_missing_sex_or_male_without_table_omits_with_reason(shipped):
    s = shipped.scores(0.5, None, 60.0)
    assert s.t_score is None and s.z_score is None and s.who_category is None
    assert "sex" in s.omitted_reason
    m = shipped.scores(0.5, "M", 60.0)
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
    assert "[derived]" in m.reference_name
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


def test_missing_column_and_ambiguous_tables_are_rejected():
    with pytest.raises(ValueError, match="missing column"):
        load_reference_tables(["sex,age_min,mean_g_cm2\nF,30,0.6\n"])
    two = HEADER + "F,30,46,0.598,0.034,young_adult,a,false\n"
    with pytest.raises(ValueError, match="young_adult rows"):
        load_reference_tables([two, two])
    overlap = HEADER + "F,50,60,0.55,0.05,age_matched,a,true\nF,55,65,0.52,0.05,age_matched,a,true\n"
    with pytest.raises(ValueError, match="overlap"):
        load_reference_tables([overlap])
