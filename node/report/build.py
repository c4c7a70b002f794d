"""The node's answer for one study: per measured hand an SR and an SC, or one refusal SR.

``build_study_outputs`` takes every analysed instance of one study with its
:class:`analysis.AnalysisResult`; all UIDs are derived from ``uid_seed`` so that re-sending the
same run never duplicates an instance in PACS.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydicom.dataset import Dataset

from analysis.result import AnalysisResult
from node.report.options import OutputOptions
from node.report.pdf import pdf_report
from node.report.plan import HandReport, ImageEntry, hand_of, is_image, plan_reports, shows_a_hand
from node.report.sc import picture_sc, result_picture
from node.report.sr import measurement_sr, refusal_sr

__all__ = ["build_study_outputs", "write_dicom_outputs"]

log = logging.getLogger("dxr.report")

RUN_INSTANCE_STRIDE = 10
"""Instance Numbers of run r start at (r - 1) * 10 + 1 (a run writes at most one SR/SC per hand)."""


def build_study_outputs(
    images: Sequence[tuple[Dataset, AnalysisResult]],
    *,
    uid_seed: str,
    options: OutputOptions = OutputOptions(),
    replaces: Sequence[str] = (),
    run: int = 1,
) -> list[Dataset]:
    """SR + SC per measured hand of one study, or one refusal SR.

    Parameters
    ----------
    images : sequence of (pydicom.Dataset, AnalysisResult)
        Every analysed instance of the study (pixel data included) with its result.
    uid_seed : str
        Seed for every generated UID (the node passes ``f"{study_uid}/{job_run}"``): the same
        seed gives the same SOP Instance UIDs, so re-sending never duplicates.
    options : OutputOptions
    replaces : sequence of str
        SOP Instance UIDs of SRs from an earlier run of this study (made by this node), which
        the new SRs supersede; referenced in the Predecessor Documents Sequence.
    run : int
        The job's run of this study (1, 2, ...): Instance Numbers are ``(run - 1) * 10 + k``, so
        they never repeat within the node's SR and SC series across runs (at most 3 hands a run).

    Returns
    -------
    list of pydicom.Dataset
        For each measured hand (ordered L, R, unknown): its SR, its SC (``options.picture``), its PDF
        report (``options.pdf``). When no hand was
        measured: one refusal SR, per ``options.refusal_sr``: ``"all"`` always, ``"hands"`` only
        when an image shows a hand (else nothing, logged ``event=refusal_sr_skipped``), ``"none"``
        never.
    """
    if not images:
        raise ValueError("build_study_outputs needs at least one analysed image.")
    study_uids = {str(ds.StudyInstanceUID) for ds, _ in images}
    if len(study_uids) != 1:
        raise ValueError(f"All images must belong to one study; got {len(study_uids)} Study Instance UIDs.")
    entries = [ImageEntry(ds, result, hand_of(ds, result)) for ds, result in images if is_image(ds)]
    if len(entries) < len(images):
        log.warning("event=outputs_non_image_skipped study=%s skipped=%d",
                    next(iter(study_uids)), len(images) - len(entries))
    if not entries:  # e.g. only a foreign SR or PDF: nothing an SR could reference as an image
        return []
    reports = plan_reports(entries)
    outputs: list[Dataset] = []
    if not reports:
        mode = {True: "all", False: "none"}.get(options.refusal_sr, options.refusal_sr)  # type: ignore[arg-type]
        if mode == "all" or (mode == "hands" and any(shows_a_hand(e) for e in entries)):
            outputs.append(refusal_sr(entries, uid_seed=uid_seed, options=options, replaces=replaces,
                                      instance_number=(max(run, 1) - 1) * RUN_INSTANCE_STRIDE + 1))
        elif mode == "hands":
            log.info("event=refusal_sr_skipped study=%s images=%d reason='no image shows a hand' reasons=%s",
                     next(iter(study_uids)), len(entries),
                     ",".join(sorted({e.result.reason or e.result.status for e in entries})))
        return outputs
    numbered = list(enumerate(reports, start=(max(run, 1) - 1) * RUN_INSTANCE_STRIDE + 1))
    # Each hand's picture (and PDF) is made in a thread while the SRs are built: Pillow, numpy and
    # the JPEG-LS encoder release the GIL, highdicom holds it, so the two overlap on a second core.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="picture") as painter:
        pictures = [painter.submit(_picture_and_pdf, report, number, uid_seed, options) for number, report in numbered]
        for (number, report), made in zip(numbered, pictures):
            outputs.append(measurement_sr(report, number, uid_seed=uid_seed, options=options, replaces=replaces))
            outputs += made.result()  # _picture_and_pdf logs and drops its own failures
    return outputs


def _picture_and_pdf(report: HandReport, instance_number: int, uid_seed: str, options: OutputOptions) -> list[Dataset]:
    """The SC picture (``options.picture``) and the PDF report (``options.pdf``) of one hand, the page
    composed once for both; a failure of either is logged and costs only that object (the SR carries the result)."""
    made: list[Dataset] = []
    study = report.measured.dataset.StudyInstanceUID
    pixels = None
    if options.picture or options.pdf:
        try:
            pixels = result_picture(report, options)
            if options.picture:
                made.append(picture_sc(report, instance_number, uid_seed=uid_seed, options=options, pixels=pixels))
        except Exception as exc:  # noqa: BLE001 - the SR carries the result; a picture bug must not lose it
            log.error("event=picture_failed study=%s hand=%s error=%r", study, report.hand, f"{type(exc).__name__}: {exc}")
    if options.pdf:
        try:
            made.append(pdf_report(report, instance_number, uid_seed=uid_seed, options=options, pixels=pixels))
        except Exception as exc:  # noqa: BLE001 - as above
            log.error("event=pdf_failed study=%s hand=%s error=%r", study, report.hand, f"{type(exc).__name__}: {exc}")
    return made


def write_dicom_outputs(
    dataset: Dataset,
    result: AnalysisResult,
    out_dir: str | Path,
    *,
    options: OutputOptions = OutputOptions(),
) -> list[Path]:
    """``dxr-node analyze --dicom-out DIR``: SR (+ SC) of one input, as ``<SOPInstanceUID>.dcm``.

    The UID seed is the input's SOP Instance UID and the analysis version, so analysing the
    same file twice overwrites the same output files.
    """
    seed = f"cli/{dataset.SOPInstanceUID}/{options.software_version}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for output in build_study_outputs([(dataset, result)], uid_seed=seed, options=options):
        path = out_dir / f"{output.SOPInstanceUID}.dcm"
        output.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
