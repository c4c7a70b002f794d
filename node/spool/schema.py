"""The SQLite schema and its versions: ``PRAGMA user_version`` says which, upgrades live here only.

A new database gets :data:`SCHEMA` and version :data:`SCHEMA_VERSION`. An existing one at a lower
version is brought up step by step by :data:`UPGRADES` in one transaction; one at the current
version is left as it is; one from a newer node is refused (this node would misread it).
Version 0 is a database made before the schema carried a version.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

__all__ = ["SCHEMA", "SCHEMA_VERSION", "SchemaError", "UPGRADES", "prepare"]

log = logging.getLogger("dxr.store")

SCHEMA_VERSION = 3
"""The version :data:`SCHEMA` describes."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT,
    sop_class_uid       TEXT,
    transfer_syntax_uid TEXT,
    calling_ae          TEXT,
    source              TEXT NOT NULL DEFAULT 'dimse',
    path                TEXT NOT NULL,
    size_bytes          INTEGER NOT NULL,
    received_at         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_instance_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_instance_uid TEXT PRIMARY KEY,
    state              TEXT NOT NULL,
    first_received_at  REAL NOT NULL,
    last_received_at   REAL NOT NULL,
    runs               INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS studies_state ON studies(state, last_received_at);
CREATE TABLE IF NOT EXISTS jobs (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    study_instance_uid TEXT NOT NULL,
    run                INTEGER NOT NULL,
    state              TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    worker_pid         INTEGER,
    last_error         TEXT,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL,
    started_at         REAL,
    UNIQUE (study_instance_uid, run)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE TABLE IF NOT EXISTS outputs (
    sop_instance_uid   TEXT PRIMARY KEY,
    job_id             INTEGER NOT NULL,
    study_instance_uid TEXT NOT NULL,
    sop_class_uid      TEXT NOT NULL,
    kind               TEXT NOT NULL,
    path               TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outputs_job ON outputs(job_id);
CREATE TABLE IF NOT EXISTS exports (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    output_sop_instance_uid TEXT NOT NULL,
    destination             TEXT NOT NULL,
    state                   TEXT NOT NULL,
    attempts                INTEGER NOT NULL DEFAULT 0,
    next_attempt_at         REAL NOT NULL,
    last_error              TEXT,
    updated_at              REAL NOT NULL,
    UNIQUE (output_sop_instance_uid, destination)
);
CREATE INDEX IF NOT EXISTS exports_state ON exports(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT NOT NULL,
    label TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (name, label)
);
CREATE TABLE IF NOT EXISTS billing (
    study_instance_uid TEXT NOT NULL,
    run                INTEGER NOT NULL,
    job_id             INTEGER NOT NULL,
    accession_number   TEXT NOT NULL DEFAULT '',
    patient_id         TEXT NOT NULL DEFAULT '',
    study_date         TEXT NOT NULL DEFAULT '',
    analysed_at        REAL NOT NULL,
    cpt_code           TEXT NOT NULL,
    modifier           TEXT NOT NULL DEFAULT '',
    performed          INTEGER NOT NULL,
    not_performed_reason TEXT NOT NULL DEFAULT '',
    sr_uids            TEXT NOT NULL DEFAULT '',
    superseded_by_run  INTEGER,
    PRIMARY KEY (study_instance_uid, run)
);
CREATE INDEX IF NOT EXISTS billing_time ON billing(analysed_at);
"""


class SchemaError(RuntimeError):
    """The database was written by a newer node (its ``user_version`` is above ours)."""


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _to_1(conn: sqlite3.Connection) -> None:
    """Version 1: ``jobs.started_at`` (when a worker last took the job; analysis-duration metric)."""
    if "started_at" not in _columns(conn, "jobs"):
        conn.execute("ALTER TABLE jobs ADD COLUMN started_at REAL")


def _to_2(conn: sqlite3.Connection) -> None:
    """Version 2: ``counters`` (monotonic Prometheus counters: ``export_attempts``/``export_failures`` per
    destination, counted as they happen, so neither ``queue retry`` nor retention makes them go down),
    seeded from the exports there are."""
    conn.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT NOT NULL, label TEXT NOT NULL, "
                 "value INTEGER NOT NULL, PRIMARY KEY (name, label))")
    conn.execute("INSERT OR IGNORE INTO counters SELECT 'export_attempts', destination, SUM(attempts) "
                 "FROM exports GROUP BY destination")
    conn.execute("INSERT OR IGNORE INTO counters SELECT 'export_failures', destination, "
                 "SUM(MAX(attempts - (state = 'sent'), 0)) FROM exports GROUP BY destination")


def _to_3(conn: sqlite3.Connection) -> None:
    """Version 3: ``billing`` (one row per finished study run: CPT 0749T, modifier 52 or not performed,
    the SRs it refers to, and the later run that superseded it). Runs finished before the upgrade
    have no row: the node did not record what it billed then."""
    for statement in SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS billing"):].split(";"):
        if statement.strip():
            conn.execute(statement)


UPGRADES: dict[int, Callable[[sqlite3.Connection], None]] = {1: _to_1, 2: _to_2, 3: _to_3}
"""``UPGRADES[n]`` brings a database at version ``n - 1`` to version ``n``."""


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def prepare(conn: sqlite3.Connection) -> int:
    """Create or upgrade the schema on ``conn`` (autocommit mode); returns the version found.

    Raises
    ------
    SchemaError
        The database is newer than :data:`SCHEMA_VERSION`.
    sqlite3.Error
        The database cannot be read or written.
    """
    found = _version(conn)
    if found == SCHEMA_VERSION:
        return found
    if found > SCHEMA_VERSION:
        raise SchemaError(f"the database schema is version {found}, newer than this node's {SCHEMA_VERSION}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _version(conn)  # another process may have prepared it while we waited for the lock
        fresh = not _columns(conn, "instances")
        if fresh:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
        else:
            for version in range(found + 1, SCHEMA_VERSION + 1):
                UPGRADES[version](conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if not fresh and found < SCHEMA_VERSION:
        log.info("event=database_upgraded from_version=%d to_version=%d", found, SCHEMA_VERSION)
    return found
