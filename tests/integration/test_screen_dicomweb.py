"""``dxr-node screen --from PACS`` (a DICOMweb ``[[pacs]]``): QIDO-RS on a real Orthanc for a date range,
WADO-RS of each instance on the Dask worker that analyses it, on a cluster given by --scheduler.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.cli import main
from node.screen.results import read_results
from tests import dicom_samples
from tests.integration.servers import DICOMWEB_PLUGIN, OrthancServer
from tests.phantom import make_dataset, make_hand

# (StudyDate, BodyPartExamined, patient, cortical_scale): March 2025 is screened.
FILMS = [
    ("20250228", "HAND", "BEFORE", 1.0),
    ("20250301", "HAND", "MARCH-NORMAL", 1.0),
    ("20250315", "WRIST", "MARCH-LOW", 0.7),
    ("20250331", "", "MARCH-NOBODYPART", 1.0),
    ("20250320", "CHEST", "MARCH-CHEST", 1.0),  # not a hand: the node's rules leave it out
    ("20250401", "HAND", "AFTER", 0.7),
]
SCREENED = {"MARCH-NORMAL", "MARCH-LOW", "MARCH-NOBODYPART"}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory):
    """An Orthanc with the DICOMweb plugin holding one phantom film per entry of FILMS."""
    if not DICOMWEB_PLUGIN.exists():
        pytest.skip(f"Orthanc DICOMweb plugin missing at {DICOMWEB_PLUGIN} (Debian package orthanc-dicomweb)")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc-screen"), aet="SCREENPACS", node_aet=None,
                           dicomweb=True)
    server.start()
    films = tmp_path_factory.mktemp("films")
    try:
        for k, (date, body_part, patient, scale) in enumerate(FILMS):
            image, truth = make_hand(k, spacing_mm=0.2, field_mm=(240.0, 180.0), cortical_scale=scale)
            ds = make_dataset(image, truth, modality="DX" if k % 2 else "CR", patient_id=patient, study_date=date,
                              body_part=body_part, sex="F", age="062Y")
            ds.Manufacturer = "Phantom Modality Co"
            server.upload(dicom_samples.save(ds, films / f"{k}.dcm"))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster():
    """A Dask LocalCluster of one worker process, handed to screen with --scheduler."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


def test_screen_from_orthanc_over_dicomweb_for_a_date_range(pacs, cluster, tmp_path, capsys):
    from distributed import Client

    config = tmp_path / "node.toml"
    config.write_text(f'[[pacs]]\nname = "archive"\ntype = "dicomweb"\nurl = "{pacs.dicomweb_url}"\n')
    out = tmp_path / "out"
    argv = ["screen", "--from", "archive", "--config", str(config), "--since", "2025-03-01", "--until", "2025-03-31",
            "--scheduler", cluster.scheduler_address, "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "archive: 3 CR/DX instances to consider, 1 left out by the [[rules]]" in captured.err
    rows = read_results(out).to_pylist()
    assert sorted(r["patient_id"] for r in rows) == sorted(SCREENED)
    assert all(r["status"] == "ok" and r["source_kind"] == "dicomweb" and r["source"] == "archive" for r in rows)
    assert all(r["key"] == f"sop:{r['sop_instance_uid']}" and r["file"] is None for r in rows)
    assert {str(r["study_date"]) for r in rows} == {"2025-03-01", "2025-03-15", "2025-03-31"}
    # WADO-RS ran on the worker that analysed the image, not in this (the client's) process.
    with Client(cluster.scheduler_address) as client:
        worker_pids = set(client.run(os.getpid).values())
        # The run took its plugin (options, archive credentials) off the cluster it does not own.
        runs = client.run(lambda: sorted(__import__("node.screen.worker", fromlist=["_RUNS"])._RUNS))
        assert list(runs.values()) == [[]]
    assert {int(r["worker"].rsplit(":", 1)[1]) for r in rows} <= worker_pids
    assert os.getpid() not in worker_pids
    followup = (out / "followup.csv").read_text().splitlines()
    assert len(followup) == 2 and followup[1].startswith("MARCH-LOW,")

    assert main(argv) == 0  # the same range again: every instance is already there
    assert len(read_results(out)) == len(rows)
    assert "3 already in" in capsys.readouterr().err


def test_screen_from_a_pacs_that_does_not_answer_or_is_not_dicomweb_is_one_line(tmp_path, capsys):
    config = tmp_path / "node.toml"
    config.write_text('[[destinations]]\nname = "gone"\ntype = "dicomweb"\nurl = "http://127.0.0.1:9/dicom-web"\n'
                      '[[pacs]]\nname = "dimse"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 9\n')
    assert main(["screen", "--from", "gone", "--config", str(config), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("dxr-node: error: gone (http://127.0.0.1:9/dicom-web): QIDO-RS query failed")
    assert sum("error" in line for line in err) == 1 and "Traceback" not in "\n".join(err)
    assert main(["screen", "--from", "dimse", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "[[pacs]] 'dimse' is of type 'dimse'; --from needs a \"dicomweb\" entry" in capsys.readouterr().err
    assert main(["screen", "--from", "nowhere", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "no [[pacs]] or [[destinations]] entry named 'nowhere' (DICOMweb ones: gone)" in capsys.readouterr().err
