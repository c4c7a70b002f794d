"""Spool and queue: received files on disk and the SQLite database that tracks studies, jobs and exports."""

from node.spool.files import atomic_write, uid_filename
from node.spool.records import Export, InstanceRecord, Job
from node.spool.store import Store, StoreError

__all__ = ["Export", "InstanceRecord", "Job", "Store", "StoreError", "atomic_write", "uid_filename"]
