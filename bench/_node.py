"""A throw-away ``dxr-node serve`` for the benchmarks: start it, wait for its SCP, stop it.

Used by ``receive_rate.py``, ``study_latency.py`` and ``stow_rate.py`` (run as scripts from any folder: this
file is imported from the script's own folder).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(work: Path, config_text: str) -> subprocess.Popen:
    """Write ``work/node.toml`` and start ``dxr-node serve`` on it (output in ``work/node.log``)."""
    (work / "node.toml").write_text(config_text)
    with open(work / "node.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen([str(REPO / ".venv/bin/dxr-node"), "serve", "--config", str(work / "node.toml")],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_scp(ae, port: int, called_ae_title: str, work: Path, timeout_seconds: float = 60.0) -> None:
    """Return once ``ae`` can associate with the node's Storage SCP (the node is up)."""
    deadline = time.monotonic() + timeout_seconds
    while not (assoc := ae.associate("127.0.0.1", port, ae_title=called_ae_title)).is_established:
        if time.monotonic() > deadline:
            raise SystemExit(f"node did not come up; see {work / 'node.log'}")
        time.sleep(0.2)
    assoc.release()


def stop_node(node: subprocess.Popen, grace_seconds: float = 30.0) -> None:
    """SIGTERM the node (a clean shutdown); its whole process group is killed if it overruns."""
    node.send_signal(signal.SIGTERM)
    try:
        node.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()
