"""The encapsulated PDF report: one hand's result as a page a clinician reads without a viewer.

Many RIS and EHRs ignore SR but file a PDF; with Modality ``DOC`` (viewers skip a PDF labelled
``OT``) in its own series of the source study. The page holds the patient and study, the image
measured (and the ones not used, with why), the per-bone table, DXR-BMD, T- and Z-score with the
reference named, the result picture (the SC's page, :func:`node.report.sc.result_picture`), the
trend when there is one, the method statement and the analysis version. Built with reportlab;
text in the bundled DejaVu Sans, so any name in any character set the header carries prints.
"""

from __future__ import annotations

import datetime
import io
from importlib import resources

import highdicom as hd
import numpy as np
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from analysis.result import BONE_NAMES, AnalysisResult
from node.dicom import ENCAPSULATED_PDF
from node.report import picture
from node.report.charset import OWN_TEXT_ATTRIBUTES, fit_own_text
from node.report.options import OutputOptions
from node.report.plan import HandReport, describe_image, hand_words
from node.report.sc import display_name, trend_line
from node.report.style import fmt
from node.report.uids import derived_uid, pdf_series_uid

__all__ = ["METHOD_STATEMENT", "PDF_SERIES_NUMBER", "pdf_bytes", "pdf_report"]

PDF_SERIES_NUMBER = 9905
"""Series number of the node's PDF reports (one series per study, every hand)."""
METHOD_STATEMENT = (
    "Method: DXR-BMD is a computed estimate from a radiograph, not DXA. Digital X-ray radiogrammetry "
    "measures the cortical thickness (T) and outer width (W) of metacarpals II-IV on a PA hand radiograph "
    "and estimates bone mineral density from them. The screening category applies the WHO T-score "
    "thresholds to this estimate; it is not a WHO diagnosis, which rests on central DXA."
)
"""The method statement the PDF and the HL7 NTE carry (the words "computed estimate from a radiograph, not DXA")."""
DOCUMENT_TITLE = "DXR-BMD report (computed estimate)"
DASH = "\u2013"


def _fonts() -> tuple[str, str]:
    """Register the bundled DejaVu Sans (regular, bold) with reportlab once; their names."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    names = ("DXR-Sans", "DXR-Sans-Bold")
    if names[0] not in pdfmetrics.getRegisteredFontNames():
        for name, file in zip(names, ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")):
            with resources.as_file(resources.files("node.fonts") / file) as path:
                pdfmetrics.registerFont(TTFont(name, str(path)))
    return names


def _date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def _identification(source: Dataset, result: AnalysisResult, options: OutputOptions) -> list[list[str]]:
    """Patient and study rows: (label, value)."""
    age = f"{result.age_years:.0f} years" if result.age_years is not None else str(source.get("PatientAge", "") or "")
    sex = str(result.sex or source.get("PatientSex", "") or "")
    rows = [
        ["Patient", display_name(source.get("PatientName"))],
        ["Patient ID", str(source.get("PatientID", "") or "")],
        ["Sex / age", f"{sex or DASH} / {age or DASH}"],
        ["Study date", _date(str(source.get("StudyDate", "") or ""))],
        ["Accession number", str(source.get("AccessionNumber", "") or "")],
        ["Study", str(source.get("StudyDescription", "") or "")],
    ]
    rows = [[label, value or DASH] for label, value in rows]
    if options.institution_name:
        rows.append(["Institution", options.institution_name])
    return rows


def _result_rows(result: AnalysisResult) -> list[list[str]]:
    """The combined result: DXR-BMD, T- and Z-score with the reference, category, indices."""
    reference = result.reference_name or "none configured"
    if result.reference_name and result.reference_provisional:
        reference += " (PROVISIONAL: partly a model)"
    rows = [
        ["DXR-BMD", f"{fmt(result.dxr_bmd_g_cm2, 3)} g/cm\u00b2"],
        ["T-score", fmt(result.t_score, 1, signed=True)],
        ["Z-score", fmt(result.z_score, 1, signed=True)],
        ["Reference population", reference],
    ]
    if result.scores_omitted_reason:
        rows.append(["Scores", result.scores_omitted_reason])
    if result.who_category:
        rows.append(["DXR screening category",
                     f"{result.who_category}: {picture.SCREENING_WORDS.get(result.who_category, '')}"])
    rows += [["BHI / mean MCI", f"{fmt(result.bhi, 2)} / {fmt(result.mci, 3)}"],
             ["Metacarpals measured", f"{result.bones_measured} of {len(BONE_NAMES)}"
              + (" (reduced service, CPT modifier 52)" if result.reduced_service else "")]]
    return rows


def _version_row(result: AnalysisResult, options: OutputOptions) -> list[str]:
    return ["Analysis version", f"{result.analysis_version} ({options.device_name} {options.software_version})"]


def _table(rows: list[list[str]], widths: list[float], fonts: tuple[str, str], header: bool = False):
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(rows, colWidths=widths, hAlign="LEFT")
    style = [("FONT", (0, 0), (-1, -1), fonts[0], 9), ("FONT", (0, 0), (0, -1), fonts[1], 9),
             ("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.lightgrey),
             ("BOTTOMPADDING", (0, 0), (-1, -1), 2), ("TOPPADDING", (0, 0), (-1, -1), 2)]
    if header:
        style.append(("FONT", (0, 0), (-1, 0), fonts[1], 9))
    table.setStyle(TableStyle(style))
    return table


def _story(report: HandReport, options: OutputOptions, pixels: np.ndarray | None, fonts: tuple[str, str]) -> list:
    """The flowables of the report, top to bottom."""
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, Paragraph, Spacer

    body = ParagraphStyle("body", fontName=fonts[0], fontSize=9, leading=11.5)
    head = ParagraphStyle("head", fontName=fonts[1], fontSize=11, leading=14, spaceBefore=6, spaceAfter=3)
    title = ParagraphStyle("title", fontName=fonts[1], fontSize=15, leading=19)
    source, result = report.measured.dataset, report.measured.result
    story = [Paragraph(f"DXR-BMD report, {hand_words(report.hand)}", title),
             Paragraph("Computed estimate from a radiograph, not DXA.", body), Spacer(1, 3 * mm),
             _table(_identification(source, result, options), [40 * mm, 130 * mm], fonts),
             Paragraph("Image used", head),
             Paragraph(_escape(f"{describe_image(source)} ({source.get('Modality', '')}); pixel size "
                               f"{fmt(result.pixel_spacing_mm, 3)} mm from "
                               f"{picture.SPACING_SOURCE_WORDS.get(result.pixel_spacing_source or '', result.pixel_spacing_source or 'unknown')}"), body)]
    story += [Paragraph(_escape(f"Not used: {describe_image(u.image.dataset)}: {u.text}"), body) for u in report.unused]
    story += [Paragraph("Per bone", head),
              _table([["Bone", "T (mm)", "W (mm)", "MCI", "VPA (mm)", "Profiles"]] + [list(r) for r in picture.table_rows(result)],
                     [18 * mm, 40 * mm, 22 * mm, 22 * mm, 22 * mm, 22 * mm], fonts, header=True),
              Paragraph("Result", head),
              _table(_result_rows(result) + [_version_row(result, options)], [45 * mm, 125 * mm], fonts)]
    trend = trend_line(report, options)
    if trend is not None:
        story += [Paragraph("Trend", head), Paragraph(_escape(picture.trend_text(trend)), body)]
    if pixels is not None:
        buf = io.BytesIO()
        # JPEG (q 90, no chroma subsampling): half the PNG's bytes; the lossless page is the SC in PACS.
        PILImage.fromarray(pixels).save(buf, format="JPEG", quality=90, subsampling=0)
        width = 160 * mm
        story += [Spacer(1, 2 * mm), Image(io.BytesIO(buf.getvalue()), width=width,
                                          height=width * pixels.shape[0] / pixels.shape[1])]
    story += [Spacer(1, 2 * mm), Paragraph(_escape(METHOD_STATEMENT), body)]
    return story


def _escape(text: str) -> str:
    """reportlab paragraphs are a small markup: escape &, < and > of free text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def pdf_bytes(report: HandReport, options: OutputOptions, pixels: np.ndarray | None = None) -> bytes:
    """The PDF report of one hand (A4, one or two pages); ``pixels``: the result picture (RGB) or None."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    fonts = _fonts()
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=12 * mm,
                            bottomMargin=12 * mm, title=DOCUMENT_TITLE, author=options.device_name,
                            creator=f"{options.device_name} {options.software_version}", invariant=True)
    doc.build(_story(report, options, pixels, fonts))
    return buf.getvalue()


def pdf_report(report: HandReport, instance_number: int, *, uid_seed: str, options: OutputOptions,
               pixels: np.ndarray | None = None) -> Dataset:
    """The Encapsulated PDF Storage instance of one hand's report, in the source study, series 9905."""
    source = report.measured.dataset
    now = datetime.datetime.now(datetime.timezone.utc)
    kwargs = {"specific_character_set": source.SpecificCharacterSet} if "SpecificCharacterSet" in source else {}
    ds = hd.SOPClass(
        study_instance_uid=str(source.StudyInstanceUID),
        series_instance_uid=pdf_series_uid(str(source.StudyInstanceUID), options.installation_uid, options.uid_root),
        series_number=PDF_SERIES_NUMBER,
        sop_instance_uid=derived_uid(uid_seed, "pdf", report.hand, root=options.uid_root),
        sop_class_uid=ENCAPSULATED_PDF, instance_number=instance_number, modality="DOC",
        manufacturer=options.manufacturer, transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=DOCUMENT_TITLE, manufacturer_model_name=options.device_name,
        software_versions=options.software_version, institution_name=options.institution_name, **kwargs,
    )
    ds.copy_patient_and_study_information(source)
    ds.ConversionType = "WSD"  # SC Equipment module: a document made on a workstation
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # the page names the patient
    ds.DocumentTitle = DOCUMENT_TITLE
    ds.ConceptNameCodeSequence = []
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceInstanceSequence = [ref]
    document = pdf_bytes(report, options, pixels)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = document + (b"\0" if len(document) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(document)
    fit_own_text(ds, OWN_TEXT_ATTRIBUTES)
    return ds
