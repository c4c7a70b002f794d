"""The billing half of :class:`node.spool.store.Store`: one ``billing`` row per finished study run.

A row says what the run did as the billing office needs it: CPT 0749T performed (modifier 52
when only two bones were measured) or not performed and why, the SR(s) it refers to, and, once a
later run of the same study has finished (a late image re-opened it), which run superseded it.
Only the latest run of a study is billable, so a study is never billed twice; a row whose run
replaces an earlier one names the SRs it replaces (``supersedes_sr_uids``), so an office that
billed the earlier run sees a correction, not a second procedure.

A mixin: ``Store`` supplies ``_query``; :func:`record_billing` runs inside ``Store.finish_job``'s
transaction, so the row exists exactly when the run's outputs and exports do.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

__all__ = ["BillingFacts", "BillingRow", "BillingRows", "CPT_DXR", "MODIFIER_REDUCED_SERVICE", "record_billing"]

CPT_DXR = "0749T"
"""CPT Category III code of DXR-BMD from a radiograph (with the report in the medical record)."""
MODIFIER_REDUCED_SERVICE = "52"
"""CPT modifier for a reduced service: the result rests on two of the three metacarpals."""


@dataclass(frozen=True)
class BillingFacts:
    """What one run did, as the billing record states it (made by ``node.report.billing.billing_facts``)."""

    accession_number: str
    patient_id: str
    study_date: str
    """YYYYMMDD as in the source's StudyDate (may be empty)."""
    performed: bool
    reduced_service: bool = False
    not_performed_reason: str = ""
    """Refusal codes (``lateral_view``, ...), comma-separated, when not performed."""
    sr_uids: tuple[str, ...] = ()
    """SOP Instance UIDs of the run's SRs (the measurement SRs, or the refusal SR)."""


@dataclass(frozen=True)
class BillingRow:
    """One ``billing`` row as ``dxr-node billing export`` prints it."""

    study_instance_uid: str
    run: int
    job_id: int
    accession_number: str
    patient_id: str
    study_date: str
    analysed_at: float
    cpt_code: str
    modifier: str
    performed: bool
    not_performed_reason: str
    sr_uids: str
    superseded_by_run: int | None
    supersedes_sr_uids: str = ""

    @property
    def billable(self) -> bool:
        """Performed and not superseded by a later run of the same study."""
        return self.performed and self.superseded_by_run is None


def record_billing(c: sqlite3.Connection, job_id: int, study_uid: str, run: int, facts: BillingFacts,
                   now: float) -> None:
    """Insert (or, for a re-run of the same job after a crash, replace) the run's row and mark
    earlier runs of the study superseded by it; inside the caller's transaction."""
    c.execute(
        "INSERT OR REPLACE INTO billing (study_instance_uid, run, job_id, accession_number, patient_id, study_date, "
        "analysed_at, cpt_code, modifier, performed, not_performed_reason, sr_uids, superseded_by_run) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?, (SELECT MIN(run) FROM billing WHERE study_instance_uid=? AND run>?))",
        (study_uid, run, job_id, facts.accession_number, facts.patient_id, facts.study_date, now, CPT_DXR,
         MODIFIER_REDUCED_SERVICE if facts.performed and facts.reduced_service else "", int(facts.performed),
         "" if facts.performed else facts.not_performed_reason, " ".join(facts.sr_uids), study_uid, run),
    )
    c.execute("UPDATE billing SET superseded_by_run=? WHERE study_instance_uid=? AND run<? "
              "AND (superseded_by_run IS NULL OR superseded_by_run>?)", (run, study_uid, run, run))


class BillingRows:
    """Read the billing rows (see the module docstring)."""

    _query: Any

    def billing_rows(self, since: float | None = None) -> list[BillingRow]:
        """Rows of runs analysed at or after ``since`` (unix seconds; None: all), oldest first."""
        rows = self._query(
            "SELECT b.*, COALESCE((SELECT p.sr_uids FROM billing p WHERE p.study_instance_uid=b.study_instance_uid "
            "AND p.superseded_by_run=b.run AND p.performed=1 ORDER BY p.run DESC LIMIT 1), '') AS supersedes_sr_uids "
            "FROM billing b WHERE b.analysed_at>=? ORDER BY b.analysed_at, b.study_instance_uid, b.run",
            (since if since is not None else float("-inf"),),
        )
        return [BillingRow(**{**dict(r), "performed": bool(r["performed"])}) for r in rows]
