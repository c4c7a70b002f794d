"""`dxr-node` as a user runs it: serve in a subprocess end to end, and the small verbs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from node.cli import main
from tests.dicom_samples import PATIENT_NAME, make_image_dataset

from tests.node.node_helpers import HOST, TestPacs, free_port, scu, wait_until, write_config

REPO = Path(__file__).resolve().parents[2]
NODE = [sys.executable, "-m", "node.cli"]


def _queue(cfg: Path) -> dict:
    proc = subprocess.run([*NODE, "queue", "list", "--json", "--config", str(cfg)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_serve_receives_analyses_exports_and_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, port=port, quiet=0.5)
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*NODE, "serve", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO, start_new_session=True)
    try:
        wait_until(lambda: (a := scu(port)).is_established and (a.release() or True), 60, "node answering")
        study = make_image_dataset(rows=64, columns=64).StudyInstanceUID
        images = [make_image_dataset(study, rows=64, columns=64, seed=k) for k in range(2)]
        assoc = scu(port)
        assert [assoc.send_c_store(ds).Status for ds in images] == [0, 0]
        assoc.release()
        outbox = tmp_path / "var" / "outbox" / study
        wait_until(lambda: list(outbox.glob("*.dcm")), 60, "result in the folder destination")
        outputs = [pydicom.dcmread(p) for p in outbox.glob("*.dcm")]
        assert all(o.StudyInstanceUID == study for o in outputs)
        q = wait_until(lambda: (q := _queue(cfg))["exports"] and all(e["state"] == "sent" for e in q["exports"]) and q,
                       30, "exports sent")
        assert [(j["study_instance_uid"], j["state"], j["run"]) for j in q["jobs"]] == [(study, "done", 1)]
        assert {e["output_sop_instance_uid"] for e in q["exports"]} == {o.SOPInstanceUID for o in outputs}
        workers = _children(proc.pid)
        assert workers, "analysis runs in worker processes"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    text = log_path.read_text()
    assert code == 0, text
    for event in ("event=node_ready", "event=worker_warmed", "event=association_accepted", "event=instance_stored",
                  "event=study_complete", "event=job_done", "event=export_sent", "event=node_stopped"):
        assert event in text, event
    assert "Traceback" not in text
    assert PATIENT_NAME.split("^")[0] not in text, "patient names never reach the log"
    # No worker survives the node.
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 10, "workers gone")


def _children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def test_serve_reports_a_busy_port_in_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        cfg = write_config(tmp_path, port=busy_port)
        proc = subprocess.run([*NODE, "serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [f"dxr-node: error: cannot listen on {HOST}:{busy_port}: Address already in use"]
    assert "Traceback" not in proc.stderr


def test_echo_verb_for_dimse_and_folder_destinations(tmp_path, capsys):
    port = free_port()
    cfg = write_config(tmp_path, destinations=(
        f'[[destinations]]\nname = "pacs"\nae_title = "TESTPACS"\nhost = "{HOST}"\nport = {port}\n'
        '[[destinations]]\nname = "outbox"\ntype = "folder"\n'))
    assert main(["echo", "pacs", "--config", str(cfg), "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pacs (TESTPACS@127.0.0.1" in err and "connection failed" in err
    pacs = TestPacs(port).start()
    try:
        assert main(["echo", "pacs", "--config", str(cfg)]) == 0
        assert "C-ECHO success" in capsys.readouterr().out
    finally:
        pacs.stop()
    assert main(["echo", "outbox", "--config", str(cfg)]) == 0
    assert "writable" in capsys.readouterr().out
    assert main(["echo", "nope", "--config", str(cfg)]) == 2
    assert "no destination named 'nope'" in capsys.readouterr().err


def test_queue_verbs_errors_are_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert main(["queue", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("JOBS (0)") and "EXPORTS (0)" in out
    assert main(["queue", "retry", "E42", "--config", str(cfg)]) == 1
    assert capsys.readouterr().err == "dxr-node: error: queue retry: no export E42 (see dxr-node queue list)\n"
    assert main(["queue", "retry", "J7", "--config", str(cfg)]) == 1
    assert "no job J7" in capsys.readouterr().err
    assert main(["queue", "retry", "what", "--config", str(cfg)]) == 2
    assert "must look like E12" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["serve", "--bogus"], "unrecognized arguments: --bogus (see dxr-node --help)"),
    (["queue", "retry"], "the following arguments are required: ID (see dxr-node queue retry --help)"),
])
def test_usage_errors_are_one_line_with_one_prefix(argv, message, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"dxr-node: error: {message}\n"


def test_echo_verb_for_a_dicomweb_destination_sends_the_token(tmp_path, capsys):
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != "Bearer s3cret":
                self.send_response(401)
                self.end_headers()
                return
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{HOST}:{server.server_address[1]}/dicom-web"
    try:
        good = write_config(tmp_path / "good", destinations=(
            f'[[destinations]]\nname = "web"\ntype = "dicomweb"\nurl = "{url}"\ntoken = "s3cret"\n'))
        bad = write_config(tmp_path / "bad", destinations=(
            f'[[destinations]]\nname = "web"\ntype = "dicomweb"\nurl = "{url}"\ntoken = "wrong"\n'))
        assert main(["echo", "web", "--config", str(good)]) == 0
        assert "QIDO-RS success" in capsys.readouterr().out
        assert main(["echo", "web", "--config", str(bad)]) == 1
        assert "HTTP 401" in capsys.readouterr().err
    finally:
        server.shutdown()
    assert seen[0][0].startswith("/dicom-web/studies")
