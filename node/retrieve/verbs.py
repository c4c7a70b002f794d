"""``dxr-node request``: have a study (or a patient's hand studies) sent from a ``[[pacs]]`` to the running node.

The verb does the C-FIND and C-MOVE itself, calling the PACS as the node's AE title; the PACS
then sends the study to the node's DIMSE port, so the node must be running (``dxr-node serve``
with the same config and data_dir) and the PACS must know the node as a move destination. For a
DICOMweb PACS the verb fetches by WADO-RS and puts the instances into the node's spool itself.
"""

from __future__ import annotations

import argparse

from node.verbs import CONFIG, DATA_DIR, CLIError, Verb, arg, config_from_args, open_store

__all__ = ["REQUEST_VERBS"]


def _node_running(config) -> bool:
    """Whether a ``dxr-node serve`` holds this data_dir (its lock; see node.spool.lock)."""
    from node.spool.lock import DataDirBusy, lock_data_dir

    try:
        lock_data_dir(config.data_dir).close()
    except DataDirBusy:
        return True
    except OSError:
        return False
    return False


def cmd_request(args: argparse.Namespace) -> int:
    from node.config import ConfigError
    from node.retrieve.query import RetrieveError, StudyQuery, dicom_date
    from node.retrieve.request import request_studies

    config = config_from_args(args)
    try:
        query = StudyQuery(accession=args.accession, study_uid=args.study_uid, patient_id=args.patient_id,
                           since=dicom_date(args.since) if args.since else None)
        pacs = config.pacs_named(args.source)
    except (ValueError, ConfigError) as exc:
        raise CLIError(str(exc), 2) from None
    store = None
    if pacs.type == "dimse" and not _node_running(config):
        raise CLIError(f"the node is not running on data_dir {config.data_dir}: start `dxr-node serve --config "
                       f"{config.path}` first (PACS {pacs.name} sends the study to the node's DIMSE port "
                       f"{config.node.port} as AE {config.node.ae_title})")
    if pacs.type == "dicomweb":
        store = open_store(config)
    try:
        done = request_studies(config, pacs, query, store=store, timeout_seconds=args.timeout)
    except RetrieveError as exc:
        raise CLIError(str(exc)) from None
    finally:
        if store is not None:
            store.close()
    for item in done:
        print(item.line())
    if pacs.type == "dicomweb" and not _node_running(config):
        print(f"the node is not running on data_dir {config.data_dir}: the study waits in its spool until "
              "dxr-node serve starts")
    print(f"{len(done)} study(ies) from PACS {pacs.name}: the node analyses each after the quiet period "
          f"({config.study.quiet_period_seconds:g} s); see dxr-node queue list")
    return 0


REQUEST_VERBS: tuple[Verb, ...] = (
    Verb("request", "retrieve a study (or a patient's hand studies) from a [[pacs]] for analysis", (
        arg("--accession", metavar="N", help="the study with this Accession Number"),
        arg("--study-uid", metavar="UID", help="the study with this Study Instance UID"),
        arg("--patient-id", metavar="ID", help="every hand/wrist CR/DX study of this patient"),
        arg("--since", metavar="DATE", help="with --patient-id: studies on or after YYYY-MM-DD"),
        arg("--from", dest="source", metavar="PACS", help="the [[pacs]] name (default: the only one configured)"),
        CONFIG, DATA_DIR,
        arg("--timeout", type=float, default=30.0, help="seconds per DIMSE message or HTTP request (default 30)"),
    ), cmd_request,
        "Find studies on a configured [[pacs]] (C-FIND or QIDO-RS) and have them sent to the running node "
        "(C-MOVE to the node's AE title, or WADO-RS): they are then analysed and the results exported as usual. "
        "For C-MOVE the PACS must know the node (AE title, host, DIMSE port) as a move destination."),
)
