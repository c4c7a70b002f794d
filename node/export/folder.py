"""The folder destination: each output copied, crash-safe, to ``<path>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``."""

from __future__ import annotations

from pathlib import Path

from node.export.config import DestinationConfig
from node.export.result import SendResult
from node.spool import Export, atomic_write, uid_filename

__all__ = ["folder_target", "send_folder"]


def folder_target(dest: DestinationConfig, study_uid: str, sop_uid: str) -> Path:
    """Where a folder destination puts one output."""
    assert dest.path is not None
    return dest.path / uid_filename(study_uid) / f"{uid_filename(sop_uid)}.dcm"


def send_folder(dest: DestinationConfig, exports: list[Export], data_dir: Path) -> list[SendResult]:
    """Copy each export's output file (``data_dir``-relative path) into the folder; one result each."""
    results = []
    for e in exports:
        src = data_dir / e.path
        try:
            atomic_write(folder_target(dest, e.study_instance_uid, e.output_sop_instance_uid), src.read_bytes())
            results.append(SendResult(src, e.output_sop_instance_uid, True))
        except OSError as exc:
            results.append(SendResult(src, e.output_sop_instance_uid, False, f"cannot write to {dest.path}: {exc}"))
    return results
