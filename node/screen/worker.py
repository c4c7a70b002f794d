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

_RUNS: dict[str, dict[str, Any]] = {}
"""Per screen run (plugin) on this worker: ``reference``, ``options``, WADO clients. Keyed by the
run, so two screens sharing one cluster never see each other's options."""

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
    run_id : str
        The screen run (:attr:`node.screen.results.ResultWriter.run_id`); the plugin's name.
    reference : the loaded reference set (:func:`node.reference.load_reference_dir`), or None.
    options : dict
        ``pixel_spacing_mm`` (float or None) and ``dest`` (the DICOMweb archive or None).
    """

    def __init__(self, run_id: str, reference: Any, options: dict[str, Any]):
        self.name = f"dxr-screen-{run_id}"
        self.run_id, self.reference, self.options = run_id, reference, options

    def setup(self, worker: Any) -> None:
        seconds = warm_kernels()  # a few ms when this process has warmed up before
        _RUNS[self.run_id] = {"reference": self.reference, "options": self.options}
        log.info("event=screen_worker_ready worker=%s run=%s warm_seconds=%.2f", worker.address, self.run_id, seconds)

    def teardown(self, worker: Any) -> None:
        _RUNS.pop(self.run_id, None)


def error_row(item: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """The results row of an input that could not be analysed (status ``error``)."""
    from node.screen.results import flatten

    return flatten(item, {"status": "error", "reason": reason, "message": message})


def _wado_client(state: dict[str, Any], dest: Any) -> Any:
    """One dicomweb-client session per run, archive and worker (keeps its connections open)."""
    from node.export.stow import make_client

    clients = state.setdefault("clients", {})
    if dest.name not in clients:
        clients[dest.name] = make_client(dest, WADO_TIMEOUT_SECONDS)
    return clients[dest.name]


def _header(ds: Any) -> dict[str, Any]:
    return {kw: str(ds.get(kw, "") or "") for kw in _HEADER_KEYWORDS} if ds is not None else {}


def _screen_dicomweb(item: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    from node.research import analyse_dataset
    from node.screen.results import flatten

    dest = state["options"]["dest"]
    try:
        # As stored (transfer-syntax=*): the PACS need not decompress; the analysis decodes.
        ds = _wado_client(state, dest).retrieve_instance(item["StudyInstanceUID"], item["SeriesInstanceUID"],
                                                         item["SOPInstanceUID"],
                                                         media_types=(("application/dicom", "*"),))
    except Exception as exc:  # HTTP errors, timeouts, a broken multipart: this image's row says so
        return error_row(item, "retrieve_failed",
                         f"WADO-RS retrieve from {dest.name} failed ({type(exc).__name__}: {str(exc)[:200]}).")
    result, _ = analyse_dataset(ds, state["reference"], pixel_spacing_mm=state["options"]["pixel_spacing_mm"],
                                name=item["key"])
    return flatten(item, result.to_json(), _header(ds))


def screen_item(item: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Analyse one input on this worker and return its results row (never raises).

    Parameters
    ----------
    item : dict
        From :mod:`node.screen.sources`.
    run_id : str
        The run whose :class:`ScreenPlugin` set this worker up.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    row = _screen(item, run_id)
    # Wall against CPU time tells a slow image from a worker starved by other processes.
    row.update(task_wall_seconds=round(time.perf_counter() - wall, 4),
               task_cpu_seconds=round(time.process_time() - cpu, 4))
    return row


def _screen(item: dict[str, Any], run_id: str) -> dict[str, Any]:
    from node.research import analyse_file
    from node.screen.results import flatten

    state = _RUNS.get(run_id)
    if state is None:
        return error_row(item, "analysis_error", "This Dask worker was not set up for screening (no plugin).")
    try:
        if item["kind"] == "dicomweb":
            return _screen_dicomweb(item, state)
        result, _, ds = analyse_file(Path(item["path"]), state["reference"],
                                     pixel_spacing_mm=state["options"]["pixel_spacing_mm"])
        return flatten(item, result.to_json(), _header(ds))
    except Exception as exc:  # a bug outside the analysis proper: still one row
        log.error("event=screen_error key=%s error=%s: %s", item.get("key"), type(exc).__name__, exc)
        return error_row(item, "analysis_error", f"Screening failed ({type(exc).__name__}: {str(exc)[:200]}).")
