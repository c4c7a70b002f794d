"""One date parser for every verb that takes a date (node.dates.user_date)."""

from __future__ import annotations

import datetime as dt

import pytest

from node.dates import user_date
from node.retrieve.query import dicom_date


def test_both_forms_and_only_real_dates():
    assert user_date("2026-03-05", "--since") == user_date(" 20260305 ", "--since") == dt.date(2026, 3, 5)
    for bad in ("2026-02-30", "20261345", "5 March", "2026-3-5x", ""):
        with pytest.raises(ValueError, match=r"^--until must be a date YYYY-MM-DD"):
            user_date(bad, "--until")


def test_request_since_refuses_a_date_that_does_not_exist():
    """It used to pass any eight digits on to the PACS as a DICOM date range."""
    assert dicom_date("2024-02-29") == "20240229"
    with pytest.raises(ValueError, match="--since must be a date"):
        dicom_date("20261345")


def test_billing_export_takes_the_same_forms(tmp_path, capsys):
    from node.cli import main
    from node.spool import Store
    from tests.node.node_helpers import write_config

    cfg = write_config(tmp_path)
    Store(tmp_path / "var").close()
    assert main(["billing", "export", "--config", str(cfg), "--since", "20000101", "--format", "json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert main(["billing", "export", "--config", str(cfg), "--since", "2026-02-30"]) == 2
    assert capsys.readouterr().err == ("dxr-node: error: billing export: --since must be a date YYYY-MM-DD, "
                                       "got '2026-02-30'\n")
