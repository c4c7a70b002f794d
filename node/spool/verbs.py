"""``dxr-node queue list`` and ``queue retry`` (the spool's jobs and exports, seen and re-queued) and
``billing export`` (the billing rows as CSV or JSON)."""

from __future__ import annotations

import argparse
import calendar
import csv
import json
import sys
from dataclasses import asdict

from node.dates import user_date
from node.verbs import CONFIG, DATA_DIR, CLIError, Verb, arg, config_from_args, format_time, one_line, open_store

__all__ = ["BILLING_COLUMNS", "BILLING_VERBS", "QUEUE_VERBS", "STATES"]

STATES = ("queued", "running", "done", "failed", "superseded", "sending", "sent")


def _parse_id(text: str) -> tuple[str, int]:
    t = text.strip().upper()
    kind = "job" if t.startswith("J") else "export"
    digits = t[1:] if t[:1] in ("J", "E") else t
    if not digits.isdigit():
        raise CLIError(f"queue retry: ID must look like E12 (export) or J3 (job), got {text!r}", 2)
    return kind, int(digits)


def cmd_queue_list(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    store = open_store(config)
    jobs, exports = store.list_jobs(), store.list_exports()
    store.close()
    if args.state:
        jobs = [j for j in jobs if j.state == args.state]
        exports = [e for e in exports if e.state == args.state]
    if args.json:
        print(json.dumps({
            "jobs": [{"id": f"J{j.id}", **asdict(j)} | {"id": f"J{j.id}", "job_id": j.id} for j in jobs],
            "exports": [{"id": f"E{e.id}", **asdict(e)} | {"id": f"E{e.id}", "export_id": e.id} for e in exports],
        }, indent=1))
        return 0
    print(f"JOBS ({len(jobs)})")
    print(f"{'ID':<6} {'STATE':<10} {'RUN':>3} {'ATT':>3} {'UPDATED':<20} {'STUDY':<64} LAST_ERROR")
    for j in jobs:
        print(f"{'J' + str(j.id):<6} {j.state:<10} {j.run:>3} {j.attempts:>3} {format_time(j.updated_at):<20} "
              f"{j.study_instance_uid:<64} {one_line(j.last_error)}")
    print(f"EXPORTS ({len(exports)})")
    print(f"{'ID':<6} {'STATE':<8} {'DESTINATION':<14} {'ATT':>3} {'NEXT_ATTEMPT':<20} {'OUTPUT':<64} LAST_ERROR")
    for e in exports:
        nxt = format_time(e.next_attempt_at) if e.state == "queued" else "-"
        print(f"{'E' + str(e.id):<6} {e.state:<8} {e.destination:<14} {e.attempts:>3} {nxt:<20} "
              f"{e.output_sop_instance_uid:<64} {one_line(e.last_error)}")
    return 0


def cmd_queue_retry(args: argparse.Namespace) -> int:
    kind, num = _parse_id(args.id)
    config = config_from_args(args)
    store = open_store(config)
    try:
        if kind == "export":
            e = store.retry_export(num)
            if e is None:
                raise CLIError(f"queue retry: no export E{num} (see dxr-node queue list)")
            if e.state == "sent":
                raise CLIError(f"queue retry: export E{num} was already sent to {e.destination}; nothing to retry")
            print(f"export E{num} to {e.destination}: {e.state} (it is sent by the running node)")
        else:
            j = store.retry_job(num)
            if j is None:
                raise CLIError(f"queue retry: no job J{num} (see dxr-node queue list)")
            if j.state in ("done", "superseded"):
                raise CLIError(f"queue retry: job J{num} is {j.state}; nothing to retry")
            print(f"job J{num} for study {j.study_instance_uid}: {j.state} (it runs in the running node)")
    finally:
        store.close()
    return 0


QUEUE_VERBS: tuple[Verb, ...] = (
    Verb("queue list", "jobs and exports with state, attempts and last error", (
        CONFIG, DATA_DIR,
        arg("--json", action="store_true", help="machine-readable output"),
        arg("--state", choices=STATES, help="only jobs and exports in this state"),
    ), cmd_queue_list),
    Verb("queue retry", "re-queue a failed export (E<n>) or job (J<n>)",
         (arg("id", metavar="ID"), CONFIG, DATA_DIR), cmd_queue_retry),
)


BILLING_COLUMNS = (
    "accession_number", "patient_id", "study_date", "analysis_date", "cpt_code", "modifier", "status",
    "not_performed_reason", "billable", "sr_uids", "superseded_by_run", "supersedes_sr_uids", "study_instance_uid",
    "run",
)
"""The columns of ``billing export``, in order (docs/outputs.md describes each)."""


def _since(text: str) -> float:
    """A date (:func:`node.dates.user_date`, UTC midnight) as unix seconds, or a usage error."""
    try:
        return float(calendar.timegm(user_date(text, "--since").timetuple()))
    except ValueError as exc:
        raise CLIError(f"billing export: {exc}", 2) from None


def billing_record(row) -> dict:
    """One ``node.spool.billing.BillingRow`` as the export writes it (the :data:`BILLING_COLUMNS`)."""
    return {
        "accession_number": row.accession_number, "patient_id": row.patient_id, "study_date": row.study_date,
        "analysis_date": format_time(row.analysed_at), "cpt_code": row.cpt_code, "modifier": row.modifier,
        "status": "performed" if row.performed else "not_performed",
        "not_performed_reason": row.not_performed_reason, "billable": row.billable, "sr_uids": row.sr_uids,
        "superseded_by_run": row.superseded_by_run, "supersedes_sr_uids": row.supersedes_sr_uids,
        "study_instance_uid": row.study_instance_uid, "run": row.run,
    }


def cmd_billing_export(args: argparse.Namespace) -> int:
    since = _since(args.since) if args.since else None
    config = config_from_args(args)
    store = open_store(config)
    try:
        records = [billing_record(r) for r in store.billing_rows(since)]
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps(records, indent=1))
        return 0
    writer = csv.DictWriter(sys.stdout, fieldnames=BILLING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({**record, "billable": "true" if record["billable"] else "false",
                         "superseded_by_run": record["superseded_by_run"] or ""})
    return 0


BILLING_VERBS: tuple[Verb, ...] = (
    Verb("billing export", "one row per study run: CPT 0749T, modifier 52, not performed and why, superseded runs", (
        CONFIG, DATA_DIR,
        arg("--since", metavar="DATE", help="only runs analysed on or after this date (YYYY-MM-DD, UTC)"),
        arg("--format", choices=("csv", "json"), default="csv", help="csv (default) or json"),
    ), cmd_billing_export),
)
