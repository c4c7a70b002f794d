"""``[[pacs]]`` configuration, the request query's checks, and a [[pacs]] as an allowed DIMSE peer."""

from __future__ import annotations

import pytest

from node.config import ConfigError
from node.receive.scp import _allowed
from node.report.history import HistoryPoint, merge_history
from node.retrieve.query import StudyQuery, dicom_date, is_hand_series
from node.verbs import CLIError
from tests.node.node_helpers import make_config

PACS = '[[pacs]]\nname = "archive"\nae_title = "ARCHIVE"\nhost = "127.0.0.1"\nport = 4242\n'
WEB_PACS = '[[pacs]]\nname = "web"\ntype = "dicomweb"\nurl = "http://127.0.0.1:8042/dicom-web"\ntoken = "t"\n'


def test_pacs_tables_are_parsed_and_found_by_name(tmp_path):
    config = make_config(tmp_path, PACS + WEB_PACS)
    assert [(p.name, p.type, p.ae_title, p.port, p.url) for p in config.pacs] == [
        ("archive", "dimse", "ARCHIVE", 4242, None), ("web", "dicomweb", None, None, "http://127.0.0.1:8042/dicom-web")]
    assert config.pacs_named("web").token == "t"
    with pytest.raises(ConfigError, match=r"several \[\[pacs\]\] configured: say which with --from \(archive, web\)"):
        config.pacs_named(None)
    with pytest.raises(ConfigError, match=r"no \[\[pacs\]\] named 'x' \(configured: archive, web\)"):
        config.pacs_named("x")
    assert make_config(tmp_path / "one", PACS).pacs_named(None).name == "archive"
    with pytest.raises(ConfigError, match=r"no \[\[pacs\]\] configured"):
        make_config(tmp_path / "none").pacs_named(None)


@pytest.mark.parametrize("table, message", [
    ('[[pacs]]\nname = "a"\ntype = "folder"\n', r'\[\[pacs\]\] \'a\' type must be "dimse" or "dicomweb"'),
    ('[[pacs]]\nname = "a"\nhost = "h"\nport = 1\n', r"\[\[pacs\]\] 'a' ae_title"),
    ('[[pacs]]\nname = "a"\nae_title = "A"\nhost = "h"\nport = 1\npath = "x"\n', r"path"),
    (PACS + PACS, r"name is used twice; pacs names must be unique"),
])
def test_bad_pacs_tables_name_the_key(tmp_path, table, message):
    with pytest.raises(ConfigError, match=message) as exc:
        make_config(tmp_path, table)
    assert str(exc.value).startswith(str(tmp_path / "node.toml"))


def test_a_dimse_pacs_may_associate_like_a_source(tmp_path):
    config = make_config(tmp_path, PACS + WEB_PACS)
    assert _allowed(config, "ARCHIVE", "127.0.0.1") is None
    assert "host 10.1.2.3 is not allowed" in _allowed(config, "ARCHIVE", "10.1.2.3")
    assert _allowed(config, "web", "127.0.0.1") == "calling AE title not in [[sources]] or [[pacs]]"


def test_the_query_names_exactly_one_study_or_patient():
    assert StudyQuery(accession="A1").study_keys() == {"AccessionNumber": "A1"}
    assert StudyQuery(patient_id="P1", since="20240101").study_keys() == {"PatientID": "P1", "StudyDate": "20240101-"}
    assert StudyQuery(patient_id="P1").patient_wide and not StudyQuery(study_uid="1.2.3").patient_wide
    for bad, message in [({}, "exactly one of"), ({"accession": "A", "patient_id": "P"}, "exactly one of"),
                         ({"accession": "A", "since": "20240101"}, "--since goes with --patient-id"),
                         ({"accession": "A" * 17}, "at most 16 characters"),
                         ({"patient_id": "SMITH*"}, "without wildcards"),
                         ({"patient_id": "A\\B"}, "without wildcards"),
                         ({"study_uid": "1.2.x"}, "must be a DICOM UID"),
                         ({"study_uid": "1." * 40 + "1"}, "must be a DICOM UID")]:
        with pytest.raises(ValueError, match=message):
            StudyQuery(**bad)


def test_dates_and_hand_series():
    assert dicom_date("2024-03-05") == dicom_date("20240305") == "20240305"
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        dicom_date("5 March")
    assert is_hand_series("CR", "HAND") and is_hand_series("dx", "wrist") and is_hand_series("DX", "")
    assert not is_hand_series("CR", "CHEST") and not is_hand_series("MR", "HAND")


def test_request_verb_errors_are_one_line_before_any_network(tmp_path, capsys):
    from node.cli import main

    config = tmp_path / "node.toml"
    make_config(tmp_path, PACS)
    assert main(["request", "--accession", "A1", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dxr-node: error: the node is not running on data_dir") and "\n" not in err
    assert main(["request", "--since", "2024-01-01", "--accession", "A", "--config", str(config)]) == 2
    assert "--since goes with --patient-id" in capsys.readouterr().err
    assert main(["request", "--patient-id", "P", "--since", "yesterday", "--config", str(config)]) == 2
    assert "--since must be a date YYYY-MM-DD" in capsys.readouterr().err
    assert CLIError  # the verb raises node.verbs.CLIError; main prints it in one line


def test_merged_history_has_one_point_per_study_and_hand_the_first_source_winning():
    local = [HistoryPoint("20240105", "L", 0.60, "1.1"), HistoryPoint("20250101", "L", 0.58, "1.2")]
    pacs = [HistoryPoint("20240105", "L", 0.61, "1.1"), HistoryPoint("20240105", "R", 0.59, "1.1"),
            HistoryPoint("20230101", "L", 0.62, "1.0")]
    merged = merge_history(local, pacs)
    assert [(p.study_instance_uid, p.hand, p.bmd_g_cm2) for p in merged] == [
        ("1.0", "L", 0.62), ("1.1", "L", 0.60), ("1.1", "R", 0.59), ("1.2", "L", 0.58)]
