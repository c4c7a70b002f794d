"""The Comprehensive SR (TID 1500 Measurement Report): one per measured hand, or one saying why nothing was measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from analysis.result import BONE_NAMES
from node.dicom import COMPREHENSIVE_SR, NODE_MANUFACTURER, SR_SERIES_DESCRIPTION
from node.report.charset import OWN_TEXT_ATTRIBUTES, fit_own_text
from node.report.codes import (
    ANALYSIS_OUTCOME, NOT_MEASURED, PRIVATE_SCHEME, PROCEDURE_DXR_BMD, PROCEDURE_NOT_PERFORMED, REFUSAL_REASON,
)
from node.report.groups import (
    algorithm_id, bone_group, combined_group, library_image, observation_context, unused_group, with_comment,
)
from node.report.options import OutputOptions
from node.report.plan import HandReport, ImageEntry, describe_image, reason_code, reason_text
from node.report.uids import derived_uid, sr_series_uid

__all__ = ["measurement_sr", "refusal_sr"]

SR_SERIES_NUMBER = 9901


def _sr_dataset(
    *,
    content: hd.sr.MeasurementReport,
    evidence: list[Dataset],
    sop_instance_uid: str,
    instance_number: int,
    options: OutputOptions,
    replaces: Sequence[str],
    performed: bool = True,
) -> hd.sr.ComprehensiveSR:
    source = evidence[0]
    study_uid = str(source.StudyInstanceUID)
    kwargs = {}
    if "SpecificCharacterSet" in source:
        kwargs["specific_character_set"] = source.SpecificCharacterSet
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=content,
        series_instance_uid=sr_series_uid(study_uid, options.installation_uid, options.uid_root),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=options.manufacturer,
        institution_name=options.institution_name,
        is_complete=True,
        is_final=False,
        is_verified=False,
        # A refusal names no performed procedure: nothing a billing system reads as a performed 0749T.
        performed_procedure_codes=[PROCEDURE_DXR_BMD] if performed else None,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=SR_SERIES_DESCRIPTION,
        **kwargs,
    )
    _separate_containers(sr)
    sr.ManufacturerModelName = options.device_name
    sr.SoftwareVersions = options.software_version
    sr.SeriesDescription = SR_SERIES_DESCRIPTION
    fit_own_text(sr, OWN_TEXT_ATTRIBUTES)
    _declare_private_scheme(sr)
    if replaces:
        _add_predecessors(sr, study_uid, replaces, options)
    return sr


def _separate_containers(sr: Dataset) -> None:
    """Mark every CONTAINER's content SEPARATE (highdicom writes CONTINUOUS).

    The items are a list of measurements, not one running text; SEPARATE also makes renderers
    such as DCMTK dsr2html print each measurement's name next to its value.
    """
    stack = [sr]
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "CONTAINER":
            item.ContinuityOfContent = "SEPARATE"
        stack.extend(item.get("ContentSequence", []))


def _declare_private_scheme(ds: Dataset) -> None:
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "DXR Node private codes"
    item.CodingSchemeResponsibleOrganization = NODE_MANUFACTURER
    item.CodingSchemeVersion = "1"
    ds.CodingSchemeIdentificationSequence = [item]


def _add_predecessors(sr: Dataset, study_uid: str, replaces: Sequence[str], options: OutputOptions) -> None:
    referenced = []
    for uid in dict.fromkeys(replaces):
        ref = Dataset()
        ref.ReferencedSOPClassUID = COMPREHENSIVE_SR
        ref.ReferencedSOPInstanceUID = uid
        referenced.append(ref)
    series = Dataset()
    series.SeriesInstanceUID = sr_series_uid(study_uid, options.installation_uid, options.uid_root)
    series.ReferencedSOPSequence = referenced
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = [series]
    sr.PredecessorDocumentsSequence = [study]


def measurement_sr(
    report: HandReport, instance_number: int, *, uid_seed: str, options: OutputOptions, replaces: Sequence[str]
) -> Dataset:
    image = report.measured
    groups = [
        bone_group(image, image.result.bones[name], report.hand, uid_seed)
        for name in BONE_NAMES
        if name in image.result.bones
    ]
    groups.append(combined_group(image, report.hand, uid_seed))
    groups += [unused_group(u, uid_seed, report.hand) for u in report.unused]
    evidence = [image.dataset] + [u.image.dataset for u in report.unused]
    return _report_sr(groups, evidence, sop_instance_uid=derived_uid(uid_seed, "sr", report.hand, root=options.uid_root),
                      instance_number=instance_number, options=options, replaces=replaces)


def refusal_sr(entries: list[ImageEntry], *, uid_seed: str, options: OutputOptions, replaces: Sequence[str],
               instance_number: int = 1) -> Dataset:
    groups = []
    for entry in entries:
        ds = entry.dataset
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=derived_uid(uid_seed, "tracking", "refusal", ds.SOPInstanceUID),
                identifier=f"No measurement ({describe_image(ds)})",
            ),
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)],
            algorithm_id=algorithm_id(entry.result),
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(ANALYSIS_OUTCOME, NOT_MEASURED),
                hd.sr.QualitativeEvaluation(REFUSAL_REASON, reason_code(entry.result)),
            ],
        )
        groups.append(
            with_comment(
                group,
                f"No DXR measurement was made on image {describe_image(ds)}: {reason_text(entry.result)}",
            )
        )
    evidence = [e.dataset for e in entries]
    return _report_sr(groups, evidence, sop_instance_uid=derived_uid(uid_seed, "sr", "refusal", root=options.uid_root),
                      instance_number=instance_number, options=options, replaces=replaces, performed=False)


def _report_sr(
    groups: list, evidence: list[Dataset], *, sop_instance_uid: str, instance_number: int,
    options: OutputOptions, replaces: Sequence[str], performed: bool = True,
) -> Dataset:
    """The TID 1500 report of ``groups`` on the ``evidence`` images, as an SR instance.

    ``performed`` False (a refusal): Procedure Reported says the DXR-BMD analysis was not
    performed (private DXR0090) and no Performed Procedure Code is written.
    """
    content = hd.sr.MeasurementReport(
        observation_context=observation_context(options),
        procedure_reported=PROCEDURE_DXR_BMD if performed else PROCEDURE_NOT_PERFORMED,
        imaging_measurements=groups,
        referenced_images=[library_image(ds) for ds in evidence],
    )
    return _sr_dataset(
        content=content,
        evidence=evidence,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        options=options,
        replaces=replaces,
        performed=performed,
    )
