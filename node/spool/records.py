"""The rows the store hands out: received instances, jobs and exports as frozen records."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Export", "InstanceRecord", "Job"]


@dataclass(frozen=True)
class InstanceRecord:
    """One received instance as the ``instances`` table holds it."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str | None
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    calling_ae: str | None
    source: str
    path: str
    size_bytes: int
    received_at: float


@dataclass(frozen=True)
class Job:
    """One analysis run of a study (``jobs`` table)."""

    id: int
    study_instance_uid: str
    run: int
    state: str
    attempts: int
    worker_pid: int | None
    last_error: str | None
    created_at: float
    updated_at: float
    started_at: float | None = None
    """When a worker last took the job (unix seconds); metrics: analysis duration = updated_at - started_at."""


@dataclass(frozen=True)
class Export:
    """One output to one destination (``exports`` table), with its output's path, study and SOP class."""

    id: int
    output_sop_instance_uid: str
    destination: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    updated_at: float
    path: str = ""
    study_instance_uid: str = ""
    sop_class_uid: str = ""
