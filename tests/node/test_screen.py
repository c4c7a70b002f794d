"""``dxr-node screen`` on a real Dask LocalCluster of worker processes over a folder of phantoms.

One row per input (measured, refused, unreadable), a rerun adds none, a worker killed with
SIGKILL mid-run still leaves exactly one row per input, and followup.csv names exactly the
patients whose phantoms were made with thin cortex (low T-score).
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from hashlib import sha1
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from node.cli import main
from node.screen.results import SCHEMA, read_results
from node.screen.summary import SUMMARY_COLUMNS, followup_from_table, followup_rows
from tests.phantom import make_dataset, make_hand

# (file, patient, seed, cortical_scale): 1.0 is the phantom's normal adult cortex (T about -1..0 at
# 62 years), 0.7-0.75 a thin one (T about -4). LOW-B has a normal and a thin film: its lowest counts.
PHANTOMS = [
    ("n0.dcm", "NORMAL-A", 0, 1.0), ("n1.dcm", "NORMAL-B", 2, 1.0), ("n2.dcm", "NORMAL-C", 4, 1.0),
    ("n3.dcm", "NORMAL-D", 6, 1.0), ("n4.dcm", "NORMAL-E", 8, 1.0),
    ("low0.dcm", "LOW-A", 1, 0.7), ("low1a.dcm", "LOW-B", 5, 1.0), ("low1b.dcm", "LOW-B", 3, 0.75),
    ("low2.dcm", "LOW-C", 7, 0.7),
]
LOW_PATIENTS = {"LOW-A", "LOW-B", "LOW-C"}
REFUSALS = {"nospacing.dcm": "no_pixel_spacing", "coarse.dcm": "resolution_too_low",
            "lateral.dcm": "lateral_view", "hand.png": "no_pixel_spacing"}
UNREADABLE = "junk.dcm"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("archive")
    for name, patient, seed, scale in PHANTOMS:
        image, truth = make_hand(seed, spacing_mm=0.2, field_mm=(240.0, 180.0), cortical_scale=scale)
        make_dataset(image, truth, patient_id=patient, sex="F", age="062Y").save_as(d / name, enforce_file_format=True)
    (d / "sub").mkdir()
    make_dataset(image, truth, spacing_attribute=None).save_as(d / "sub" / "nospacing.dcm", enforce_file_format=True)
    make_dataset(image, truth, spacing_mm=0.4).save_as(d / "coarse.dcm", enforce_file_format=True)
    lateral, lateral_truth = make_hand(0, spacing_mm=0.2, view="lateral", field_mm=(240.0, 180.0))
    make_dataset(lateral, lateral_truth).save_as(d / "lateral.dcm", enforce_file_format=True)
    Image.fromarray((image / image.max() * 255).astype(np.uint8)).save(d / "sub" / "hand.png")
    (d / UNREADABLE).write_bytes(b"not a dicom file")
    (d / "README.txt").write_text("not an input")
    return d


def _inputs(archive: Path) -> set[str]:
    return {str(p.absolute()) for p in archive.rglob("*") if p.is_file() and p.name != "README.txt"}


def _start_screen(archive: Path, out: Path) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "dxr-node"), "screen", str(archive), "--out", str(out), "--workers", "2"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_a_busy_worker(address: str, deadline: float) -> tuple[int, set[str]]:
    """SIGKILL a worker process of the cluster at ``address`` while it has tasks: (its PID, their keys)."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        while time.monotonic() < deadline:
            busy = [(w, tasks) for w, tasks in client.processing().items() if tasks]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0][0]])[busy[0][0]]
                os.kill(pid, signal.SIGKILL)
                return pid, set(busy[0][1])
            time.sleep(0.02)
    raise AssertionError("no worker ever had a task to kill")


def _check_one_row_per_input(archive: Path, out: Path) -> list[dict]:
    rows = read_results(out).to_pylist()
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)), "an image appears twice"
    assert set(files) == _inputs(archive)
    assert len({r["key"] for r in rows}) == len(rows)
    return rows


def test_screen_two_workers_survives_a_killed_worker_and_a_rerun_adds_nothing(archive, tmp_path):
    out = tmp_path / "out"
    proc = _start_screen(archive, out)
    try:
        _kill_a_worker_during_the_run(proc, archive, out)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    files_before = sorted((out / "results").glob("*.parquet"))
    assert main(["screen", str(archive), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert sorted((out / "results").glob("*.parquet")) == files_before  # nothing new written
    _check_one_row_per_input(archive, out)


def _kill_a_worker_during_the_run(proc: subprocess.Popen, archive: Path, out: Path) -> None:
    stderr_lines: list[str] = []
    address = None
    for line in proc.stderr:
        stderr_lines.append(line)
        m = re.search(r"Dask scheduler (tcp://\S+),", line)
        if m:
            address = m.group(1)
            break
    assert address, "".join(stderr_lines)
    killed_pid, killed_tasks = _kill_a_busy_worker(address, time.monotonic() + 120)
    # communicate() reads the rest of both pipes (a second reader of stderr beside it would race
    # it for the lines: the progress lines went to whichever read first).
    stdout, rest = proc.communicate(timeout=300)
    stderr_lines.append(rest)
    assert proc.returncode == 0, "".join(stderr_lines)
    assert "Traceback" not in "".join(stderr_lines)
    rows = _check_one_row_per_input(archive, out)
    by_name = {Path(r["file"]).name: r for r in rows}
    # The killed worker's task was re-run by Dask: every phantom is measured, none lost to the kill.
    for name, patient, *_ in PHANTOMS:
        assert (by_name[name]["status"], by_name[name]["patient_id"]) == ("ok", patient), by_name[name]
        assert by_name[name]["t_score"] is not None and by_name[name]["dxr_bmd_g_cm2"] > 0
        assert by_name[name]["iii_cortical_thickness_mm"] > 0 and by_name[name]["analysis_version"]
    for name, reason in REFUSALS.items():
        assert (by_name[name]["status"], by_name[name]["reason"]) == ("refused", reason)
    assert (by_name[UNREADABLE]["status"], by_name[UNREADABLE]["reason"]) == ("error", "unreadable")
    # The tasks the killed worker held were analysed again by another worker process.
    rerun = [r for r in rows if any(k.endswith(sha1(r["key"].encode()).hexdigest()) for k in killed_tasks)]
    assert len(rerun) == len(killed_tasks) >= 1
    assert all(not r["worker"].endswith(f":{killed_pid}") for r in rerun)
    assert f"images: {len(rows)}" in stdout and "follow-up (lowest T-score <= -2.5): 3 patients" in stdout
    assert re.search(r"screen: \d+/\d+ images, \d+ errors, [\d.]+ images/s, ETA", "".join(stderr_lines))

    with open(out / "followup.csv", newline="", encoding="utf-8") as fh:
        followup = list(csv.DictReader(fh))
    assert {r["patient_id"] for r in followup} == LOW_PATIENTS
    assert all(float(r["lowest_t_score"]) <= -2.5 for r in followup)
    low_b = next(r for r in followup if r["patient_id"] == "LOW-B")
    assert (Path(low_b["file"]).name, low_b["images_measured"]) == ("low1b.dcm", "2")


def test_a_changed_file_is_screened_again_and_limit_bounds_a_run(archive, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("n0.dcm", "low0.dcm", UNREADABLE):
        (src / name).write_bytes((archive / name).read_bytes())
    out = tmp_path / "out"
    assert main(["screen", str(src), "--out", str(out), "--workers", "1", "--limit", "2", "--no-progress"]) == 0
    assert len(read_results(out)) == 2
    os.utime(src / UNREADABLE, ns=(time.time_ns(), time.time_ns() - 10**9))  # a new version of the file
    assert main(["screen", str(src), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    # Sorted order: junk.dcm and low0.dcm in the first run; then the changed junk.dcm and n0.dcm.
    names = sorted(Path(r["file"]).name for r in read_results(out).to_pylist())
    assert names == sorted([UNREADABLE, UNREADABLE, "low0.dcm", "n0.dcm"])
    schema = pq.read_schema(next((out / "results").glob("*.parquet")))
    assert {"ii_mci", "iv_outer_width_mm", "t_score", "z_score", "study_date"} <= set(schema.names)


def test_followup_takes_each_patients_lowest_t_score_against_the_threshold():
    rows = [
        {"key": "a", "patient_id": "P1", "status": "ok", "t_score": -1.0},
        {"key": "b", "patient_id": "P1", "status": "ok", "t_score": -2.6},
        {"key": "c", "patient_id": "P2", "status": "ok", "t_score": -2.5},
        {"key": "d", "patient_id": "P3", "status": "ok", "t_score": -2.4},
        {"key": "e", "patient_id": "P4", "status": "refused", "t_score": None},
        {"key": "f", "patient_id": None, "status": "ok", "t_score": -3.0},
    ]
    listed = followup_rows(rows, -2.5)
    assert [(r["patient_id"], r["lowest_t_score"]) for r in listed] == [(None, -3.0), ("P1", -2.6), ("P2", -2.5)]
    assert [r["images_measured"] for r in listed] == [1, 2, 1]
    assert [r["patient_id"] for r in followup_rows(rows, -2.55)] == [None, "P1"]
    # The Arrow path the verb takes (only the listed patients' rows become dicts) gives the same list.
    table = pa.Table.from_pylist([r | {c: None for c in SUMMARY_COLUMNS if c not in r} for r in rows],
                                 schema=pa.schema([SCHEMA.field(c) for c in SUMMARY_COLUMNS]))
    assert followup_from_table(table, -2.5) == listed


@pytest.mark.parametrize("argv, message", [
    (["--out", "X"], "screen needs SOURCE"),
    (["a", "--out", "X", "--since", "2025-01-01"], "--since/--until select studies on a PACS"),
    (["--out", "X", "--from", "pacs"], "--from needs --config FILE"),
    (["a", "--out", "X", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers starts a local cluster"),
    (["a", "--out", "X", "--pixel-spacing", "0"], "--pixel-spacing must be a positive pixel size"),
])
def test_bad_usage_is_one_line_and_exit_2(capsys, argv, message):
    assert main(["screen", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dxr-node: error: ") and message in err and err.count("\n") == 1
