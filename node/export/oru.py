"""The HL7 v2.5.1 ORU^R01 result message of one SR, for RIS and EHRs that file HL7 and ignore SR.

The message is read off the SR the node sent to PACS (highdicom parses it), so every OBX value is
the SR's own: the numeric value is the SR's Numeric Value string, the code and units are the
SR's concept and UCUM unit. Segments::

    MSH  sending/receiving application and facility from the destination, UTF-8 (MSH-18)
    PID  from the DICOM patient module (ID^^^issuer, name, birth date, sex)
    OBR  filler order number = Accession Number, procedure 0749T^...^C4, result status F
         (C for a re-analysis whose SR replaces an earlier one; X when not performed)
    NTE  the method statement, and the SR's comments (reference population, reduced service, why not)
    OBX  NM per measurement (DXR-BMD, T-score, Z-score, BHI, MCI, per bone T, W, MCI, VPA with the
         bone as sub-ID), CWE per coded evaluation (screening category, service extent, refusal
         reason), optionally ED with the PDF report (base64)

Free text (names, comments) has the HL7 delimiters escaped (``\\F\\ \\S\\ \\R\\ \\T\\ \\E\\``);
:func:`hl7.parse` reads the result back before it is sent.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass, field

import highdicom as hd
import hl7
from pydicom.dataset import Dataset

from node.dicom import sr_bone
from node.export.config import DestinationConfig
from node.report.pdf import METHOD_STATEMENT
from node.spool.billing import CPT_DXR

__all__ = ["OruResult", "build_oru", "escape"]

PROCEDURE = f"{CPT_DXR}^Bone strength and fracture risk using digital X-ray radiogrammetry-BMD^C4"
"""OBR-4: CPT 0749T (HL7 table 0396: C4 = CPT-4)."""
PDF_OBSERVATION = "PDF^Report as PDF^99DXRNODE"
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))
_COMMENT = "121106"
"""DCM Comment: the sentences the report adds to a group (reference population, why not measured)."""


def escape(text: object) -> str:
    """``text`` with the HL7 delimiters escaped and line breaks as spaces (one field or component)."""
    value = " ".join(str(text or "").split())
    for raw, escaped in _ESCAPES:
        value = value.replace(raw, escaped)
    return value


@dataclass
class OruResult:
    """What the message says, beside its text (tests and logs): the OBX rows as (type, code, sub-ID, value, unit)."""

    message: str
    control_id: str
    performed: bool
    observations: list[tuple[str, str, str, str, str]] = field(default_factory=list)


def _cwe(concept) -> str:
    return "^".join(escape(x) for x in (concept.value, concept.meaning, concept.scheme_designator))


def _pid(sr: Dataset) -> str:
    issuer = escape(sr.get("IssuerOfPatientID", ""))
    name = sr.get("PatientName")
    # DICOM PN family^given^middle^prefix^suffix -> XPN family^given^middle^suffix^prefix
    parts = [escape(p) for p in (str(name).split("=")[0].split("^") if name else [])] + [""] * 5
    xpn = "^".join([parts[0], parts[1], parts[2], parts[4], parts[3]]).rstrip("^")
    sex = str(sr.get("PatientSex", "") or "").upper()
    return "|".join(["PID", "1", "", f"{escape(sr.get('PatientID', ''))}^^^{issuer}".rstrip("^"), "", xpn, "",
                     escape(sr.get("PatientBirthDate", "")), sex if sex in ("F", "M", "O") else "U"])


def _groups(sr: Dataset) -> list:
    """The SR's measurement groups: the combined result first, then the bones, then the rest."""
    report = hd.sr.MeasurementReport.from_sequence([sr])
    groups = list(report.get_planar_roi_measurement_groups()) + list(report.get_image_measurement_groups())

    def order(group) -> tuple:
        ident = str(group.tracking_identifier or "")
        return (0 if ident.startswith("DXR-BMD") else 1 if ident.startswith("Metacarpal") else 2,
                {"II": 0, "III": 1, "IV": 2}.get(sr_bone(ident), 3))
    return sorted(groups, key=order)


def _comments(group) -> list[str]:
    texts = []
    for item in group[0].get("ContentSequence", []):  # a template: a list holding its container
        name = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
        if item.get("ValueType") == "TEXT" and name == _COMMENT:
            texts.append(str(item.TextValue))
    return texts


def _group_observations(group) -> list[tuple[str, str, str, str, str]]:
    """(type, code, sub-ID, value, unit) rows of one group: its numbers, then its coded evaluations."""
    sub_id = sr_bone(str(group.tracking_identifier or ""))
    rows = []
    for m in group.get_measurements():
        value = str(m[0].MeasuredValueSequence[0].NumericValue).strip()  # the SR's own number, as written
        rows.append(("NM", _cwe(m.name), sub_id, value, _cwe(m.unit)))
    for e in group.get_qualitative_evaluations():
        rows.append(("CWE", _cwe(e.name), sub_id, _cwe(e.value), ""))
    return rows


def _obx(set_id: int, row: tuple[str, str, str, str, str], when: str) -> str:
    kind, code, sub_id, value, unit = row
    return "|".join(["OBX", str(set_id), kind, code, sub_id, value, unit, "", "", "", "", "F", "", "", when])


def build_oru(sr: Dataset, dest: DestinationConfig, control_id: str, *, pdf: bytes | None = None,
              now: datetime.datetime | None = None) -> OruResult:
    """The ORU^R01 of one node SR (measurement or refusal); ``pdf``: the report to embed as ED.

    Raises
    ------
    hl7.ParseException
        The message built does not parse (never expected: a guard before anything is sent).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y%m%d%H%M%S")
    performed = bool(sr.get("PerformedProcedureCodeSequence"))  # a refusal SR leaves it empty
    status = ("C" if "PredecessorDocumentsSequence" in sr else "F") if performed else "X"
    groups = _groups(sr)
    observed = f"{sr.get('StudyDate', '')}{sr.get('StudyTime', '')}".split(".")[0] or stamp
    msh = "|".join(["MSH", "^~\\&", escape(dest.sending_application), escape(dest.sending_facility),
                    escape(dest.receiving_application), escape(dest.receiving_facility), stamp, "",
                    "ORU^R01^ORU_R01", escape(control_id), "P", "2.5.1", "", "", "AL", "NE", "", "UNICODE UTF-8"])
    obr = "|".join(["OBR", "1", "", escape(sr.get("AccessionNumber", "")), PROCEDURE, "", "", observed]
                   + [""] * 14 + [stamp, "", "", status])
    segments = [msh, _pid(sr), obr, f"NTE|1|L|{escape(METHOD_STATEMENT)}"]
    notes = [] if performed else ["DXR-BMD (CPT 0749T) was not performed: no image of the study could be measured."]
    notes += [text for g in groups for text in _comments(g)]
    segments += [f"NTE|{k}|L|{escape(text)}" for k, text in enumerate(notes, start=2)]
    rows = [row for g in groups for row in _group_observations(g)]
    segments += [_obx(k, row, observed) for k, row in enumerate(rows, start=1)]
    if pdf is not None:
        data = base64.b64encode(pdf).decode("ascii")
        segments.append(_obx(len(rows) + 1, ("ED", PDF_OBSERVATION, "", f"^AP^PDF^Base64^{data}", ""), observed))
    message = "\r".join(segments) + "\r"
    hl7.parse(message)
    return OruResult(message, control_id, performed, rows)
