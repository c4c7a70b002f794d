"""The billing record: one row per study run in SQLite, modifier 52, not performed and why,
superseded runs, ``dxr-node billing export`` (real Store, real worker, real CLI)."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import time

import pydicom
import pytest
from pydicom.uid import generate_uid

import analysis
from node.cli import main
from node.pipeline.worker import run_job
from node.report import build_study_outputs
from node.report.billing import billing_facts
from node.spool import Store
from node.spool.billing import BillingFacts
from node.spool.schema import SCHEMA_VERSION
from tests.dicom_samples import make_image_dataset
from tests.node.node_helpers import encode, make_config, write_config
from tests.node.outputs_inputs import hand_dataset, result_from_truth, view_refusal


def _facts(images):
    return billing_facts(images, build_study_outputs(images, uid_seed="billing"))


def test_three_bones_is_the_full_service_two_bones_modifier_52_a_refusal_not_performed():
    source, truth = hand_dataset()
    source.AccessionNumber = "ACC123"
    full = _facts([(source, result_from_truth(truth))])
    assert (full.performed, full.reduced_service, full.accession_number) == (True, False, "ACC123")
    assert full.patient_id == str(source.PatientID) and full.study_date == str(source.StudyDate)
    assert len(full.sr_uids) == 1
    reduced = _facts([(source, result_from_truth(truth, refuse_bone="III"))])
    assert (reduced.performed, reduced.reduced_service) == (True, True)
    lateral, _ = hand_dataset(view="lateral")
    refused = _facts([(lateral, view_refusal("lateral"))])
    assert (refused.performed, refused.not_performed_reason) == (False, "lateral_view")
    assert len(refused.sr_uids) == 1  # the refusal SR


def _receive(store: Store, study: str, seed: int) -> None:
    ds = make_image_dataset(study, rows=64, columns=64, seed=seed)
    ds.AccessionNumber = "A-77"
    store.store_instance(encode(ds), sop_instance_uid=ds.SOPInstanceUID, study_instance_uid=study,
                         sop_class_uid=ds.SOPClassUID)


def _next_job(store: Store):
    store.complete_due_studies(0.0, now=time.time() + 1)
    return store.claim_job(os.getpid())


def _performed(uid: str, reduced: bool = False) -> BillingFacts:
    return BillingFacts("A-1", "P-1", "20260102", performed=True, reduced_service=reduced, sr_uids=(uid,))


def test_a_later_run_supersedes_the_earlier_so_one_row_per_study_is_billable(tmp_path):
    store = Store(tmp_path / "var")
    study = generate_uid()
    _receive(store, study, 0)
    job1 = _next_job(store)
    store.finish_job(job1.id, [], [], _performed("1.2.3.1", reduced=True))
    store.finish_job(job1.id, [], [], _performed("1.2.3.1", reduced=True))  # re-run after a crash: same row
    _receive(store, study, 1)  # a late image
    job2 = _next_job(store)
    store.finish_job(job2.id, [], [], _performed("1.2.3.2"))
    first, second = store.billing_rows()
    assert (first.run, first.superseded_by_run, first.billable, first.modifier) == (1, 2, False, "52")
    assert (second.run, second.superseded_by_run, second.billable, second.modifier) == (2, None, True, "")
    assert second.supersedes_sr_uids == "1.2.3.1" and second.cpt_code == "0749T"
    assert [r.run for r in store.billing_rows(since=time.time() + 60)] == []


def test_the_worker_records_a_not_performed_row_with_the_engines_reasons(tmp_path):
    cfg = make_config(tmp_path)
    store = Store(cfg.data_dir)
    study = generate_uid()
    _receive(store, study, 0)
    job = _next_job(store)
    assert run_job(store, cfg, job)
    (row,) = store.billing_rows()
    spooled = store.study_instances(study)[0]
    expected = analysis.analyse(pydicom.dcmread(store.data_dir / spooled.path))
    assert (row.performed, row.not_performed_reason, row.modifier) == (False, expected.reason, "")
    assert (row.accession_number, row.billable) == ("A-77", False)
    (sr,) = store._query("SELECT sop_instance_uid FROM outputs WHERE job_id=?", (job.id,))
    assert row.sr_uids == sr["sop_instance_uid"]


def test_billing_export_csv_and_json(tmp_path, capsys):
    cfg = write_config(tmp_path)
    store = Store(tmp_path / "var")
    study = generate_uid()
    _receive(store, study, 0)
    store.finish_job(_next_job(store).id, [], [], _performed("1.2.3.1", reduced=True))
    _receive(store, study, 1)
    store.finish_job(_next_job(store).id, [], [],
                     BillingFacts("A-1", "P-1", "20260102", performed=False, not_performed_reason="lateral_view"))
    store.close()
    assert main(["billing", "export", "--config", str(cfg), "--since", "2000-01-01"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["run"], r["status"], r["modifier"], r["billable"], r["superseded_by_run"]) for r in rows] == [
        ("1", "performed", "52", "false", "2"), ("2", "not_performed", "", "false", "")]
    assert rows[1]["not_performed_reason"] == "lateral_view" and rows[0]["cpt_code"] == "0749T"
    assert main(["billing", "export", "--config", str(cfg), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["sr_uids"] for r in records] == ["1.2.3.1", ""]
    assert records[0]["analysis_date"].endswith("Z") and records[0]["accession_number"] == "A-1"
    assert main(["billing", "export", "--config", str(cfg), "--since", "2999-01-01", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["billing", "export", "--config", str(cfg), "--since", "yesterday"]) == 2
    assert capsys.readouterr().err == ("dxr-node: error: billing export: --since must be a date YYYY-MM-DD, "
                                       "got 'yesterday'\n")


def test_a_version_2_database_gets_the_billing_table(tmp_path):
    Store(tmp_path).close()
    with sqlite3.connect(tmp_path / "node.sqlite3") as c:
        c.execute("DROP TABLE billing")
        c.execute("PRAGMA user_version = 2")
    store = Store(tmp_path)
    assert store.billing_rows() == []
    with sqlite3.connect(tmp_path / "node.sqlite3") as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


@pytest.mark.parametrize("outputs, message", [
    ('["SR", "XLS"]', 'outputs must be a list of distinct names from "SR", "SC", "PDF"'),
    ('"PDF"', "outputs must be a list"),
])
def test_destination_outputs_are_checked(tmp_path, outputs, message):
    from node.config import ConfigError, load_config

    path = write_config(tmp_path, destinations=f'[[destinations]]\nname = "a"\ntype = "folder"\noutputs = {outputs}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(path)
