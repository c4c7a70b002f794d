"""What runs on a Dask worker: :class:`ScreenPlugin` (once per worker) and :func:`screen_item` (per image).

The plugin loads the numba kernels from their on-disk cache and keeps the reference set, so a
task pays only for its own image. :func:`screen_item` reads a file, or fetches a PACS instance
over WADO-RS (on this worker: the client never holds pixels), analyses it with the per-file
analysis of ``dxr-node analyze`` (:func:`node.research.analyse_file` / ``analyse_dataset``) and
returns the results row. It never raises: a failure is a row with status ``error``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["ScreenPlugin", "screen_item", "error_row", "warm_kernels"]

log = logging.getLogger("dxr.screen")

_STATE: dict[str, Any] = {}
"""This worker process's plugin state: ``reference``, ``options``, ``warm_seconds``, WADO clients."""

WADO_TIMEOUT_SECONDS = 120.0
_HEADER_KEYWORDS = ("PatientID", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def warm_kernels() -> float:
    """Load the analysis and every numba kernel (``analysis.warmup``, as the node's workers); seconds taken.

    numba loads (or compiles) a kernel on its first call per argument type, and the analysis
    imports the hand finder and the profile fit on its first image: both here, once per worker,
    instead of inside the first image every worker analyses.
    """
    started = time.perf_counter()
    import analysis.calibration  # noqa: F401
    import analysis.indices  # noqa: F401
    import analysis.locate  # noqa: F401
    import analysis.measure  # noqa: F401
    from analysis.warmup import warm_up

    warm_up()
    return time.perf_counter() - started


class ScreenPlugin(WorkerPlugin):
    """Set up a worker for screening once: warm numba kernels, keep the reference set and options.

    Parameters
    ----------
    reference : the loaded reference set (:func:`node.reference.load_reference_dir`), or None.
    options : dict
        ``pixel_spacing_mm`` (float or None) and ``dest`` (the DICOMweb destination or None).
    """

    name = "dxr-screen"

    def __init__(self, reference: Any, options: dict[str, Any]):
        self.reference, self.options = reference, options

    def setup(self, worker: Any) -> None:
        _STATE.clear()
        _STATE.update(reference=self.reference, options=self.options, warm_seconds=warm_kernels())
        log.info("event=screen_worker_ready worker=%s warm_seconds=%.2f", worker.address, _STATE["warm_seconds"])


def error_row(item: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """The results row of an input that could not be analysed (status ``error``)."""
    from node.screen.results import flatten

    return flatten(item, {"status": "error", "reason": reason, "message": message})


def _wado_client(dest: Any) -> Any:
    """One dicomweb-client session per destination and worker (keeps its connections open)."""
    from node.export.stow import make_client

    clients = _STATE.setdefault("clients", {})
    if dest.name not in clients:
        clients[dest.name] = make_client(dest, WADO_TIMEOUT_SECONDS)
    return clients[dest.name]


def _header(ds: Any) -> dict[str, Any]:
    return {kw: str(ds.get(kw, "") or "") for kw in _HEADER_KEYWORDS} if ds is not None else {}


def _screen_dicomweb(item: dict[str, Any], reference: Any, spacing: float | None) -> dict[str, Any]:
    from node.research import analyse_dataset
    from node.screen.results import flatten

    dest = _STATE["options"]["dest"]
    try:
        # As stored (transfer-syntax=*): the PACS need not decompress; the analysis decodes.
        ds = _wado_client(dest).retrieve_instance(item["StudyInstanceUID"], item["SeriesInstanceUID"],
                                                  item["SOPInstanceUID"], media_types=(("application/dicom", "*"),))
    except Exception as exc:  # HTTP errors, timeouts, a broken multipart: this image's row says so
        return error_row(item, "retrieve_failed",
                         f"WADO-RS retrieve from {dest.name} failed ({type(exc).__name__}: {str(exc)[:200]}).")
    result, _ = analyse_dataset(ds, reference, pixel_spacing_mm=spacing, name=item["key"])
    return flatten(item, result.to_json(), _header(ds))


def screen_item(item: dict[str, Any]) -> dict[str, Any]:
    """Analyse one input on this worker and return its results row (never raises).

    Parameters
    ----------
    item : dict
        From :mod:`node.screen.sources`.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    row = _screen(item)
    # Wall against CPU time tells a slow image from a worker starved by other processes.
    row.update(task_wall_seconds=round(time.perf_counter() - wall, 4),
               task_cpu_seconds=round(time.process_time() - cpu, 4))
    return row


def _screen(item: dict[str, Any]) -> dict[str, Any]:
    from node.research import analyse_file
    from node.screen.results import flatten

    if "options" not in _STATE:
        return error_row(item, "analysis_error", "This Dask worker was not set up for screening (no plugin).")
    reference, spacing = _STATE["reference"], _STATE["options"]["pixel_spacing_mm"]
    try:
        if item["kind"] == "dicomweb":
            return _screen_dicomweb(item, reference, spacing)
        result, _, ds = analyse_file(Path(item["path"]), reference, pixel_spacing_mm=spacing)
        return flatten(item, result.to_json(), _header(ds))
    except Exception as exc:  # a bug outside the analysis proper: still one row
        log.error("event=screen_error key=%s error=%s: %s", item.get("key"), type(exc).__name__, exc)
        return error_row(item, "analysis_error", f"Screening failed ({type(exc).__name__}: {str(exc)[:200]}).")
