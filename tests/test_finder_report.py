"""tools/finder_report.py: the interval it prints beside each acceptance figure, and its refusal
of a data folder without labels (the report itself runs on ../shared and is not a test)."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("finder_report", REPO / "tools/finder_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["finder_report"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n, d, expected", [
    (0, 10, (0.0, 27.75)),  # Wilson 1927 / Newcombe 1998 table values
    (5, 10, (23.66, 76.34)),
    (10, 10, (72.25, 100.0)),
])
def test_wilson_interval_matches_published_values(report, n, d, expected):
    lo, hi = report._wilson(n, d)
    assert (lo, hi) == pytest.approx(expected, abs=0.02)


def test_interval_narrows_with_the_sample_and_holds_the_share(report):
    small, large = report._wilson(9, 10), report._wilson(900, 1000)
    assert small[0] < 90.0 < small[1] and large[0] < 90.0 < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 5
    assert report._share_ci(116, 127).startswith("116/127 =  91.3 % (95 % CI")


def test_folder_without_labels_is_a_usage_error(report, tmp_path, capsys):
    assert report.main(["--data", str(tmp_path), "--only", "thumbs"]) == 2
    assert "no labels.jsonl" in capsys.readouterr().err
