"""What a study run did, as its billing record states it (``node.spool.billing``).

Performed (CPT 0749T) when a hand was measured; modifier 52 (reduced service) when every
measured hand rests on two metacarpals only (a hand measured on all three is the full service,
one 0749T for the study). Not performed, with the refusal codes, when nothing was measured.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from analysis.result import AnalysisResult
from node.dicom import SR_SOP_CLASS_PREFIX
from node.report.plan import ImageEntry, hand_of, is_image, plan_reports
from node.spool.billing import BillingFacts

__all__ = ["billing_facts"]

NO_IMAGE_REASON = "no_image"
"""Not performed because the study held no image the analysis could look at (e.g. only an SR)."""


def billing_facts(images: Sequence[tuple[Dataset, AnalysisResult]], outputs: Sequence[Dataset]) -> BillingFacts:
    """The billing facts of one run from its analysed instances and the outputs built from them.

    Parameters
    ----------
    images : sequence of (pydicom.Dataset, AnalysisResult)
        Every analysed instance of the study (as given to ``build_study_outputs``).
    outputs : sequence of pydicom.Dataset
        The run's outputs; the SRs among them are the ones the row refers to.
    """
    first = images[0][0] if images else Dataset()
    ids = dict(accession_number=str(first.get("AccessionNumber", "") or ""),
               patient_id=str(first.get("PatientID", "") or ""), study_date=str(first.get("StudyDate", "") or ""))
    sr_uids = tuple(str(o.SOPInstanceUID) for o in outputs if str(o.SOPClassUID).startswith(SR_SOP_CLASS_PREFIX))
    entries = [ImageEntry(ds, result, hand_of(ds, result)) for ds, result in images if is_image(ds)]
    reports = plan_reports(entries)
    if reports:
        reduced = all(r.measured.result.reduced_service for r in reports)
        return BillingFacts(**ids, performed=True, reduced_service=reduced, sr_uids=sr_uids)
    reasons = sorted({e.result.reason or (f"{e.result.view}_view" if e.result.view else e.result.status)
                      for e in entries}) or [NO_IMAGE_REASON]
    return BillingFacts(**ids, performed=False, not_performed_reason=",".join(reasons), sr_uids=sr_uids)
