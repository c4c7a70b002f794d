"""Small synthetic CR/DX test inputs written with pydicom (not phantoms: no anatomy).

For realistic hand images use ``tests/phantom.py``; these are for exercising the wire path
(routing, spooling, duplicates, bad inputs) quickly. Images are 16-bit MONOCHROME2, bone
bright, with ``BodyPartExamined = HAND`` and proper UIDs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"

# A patient name the node must never write to its log.
PATIENT_NAME = "Quietsample^Hannelore"


def _file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax=ExplicitVRLittleEndian) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _patient_study(ds: Dataset, study_uid: str, patient_id: str) -> None:
    ds.PatientName = PATIENT_NAME
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20261127"
    ds.StudyTime = "080000"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC" + study_uid[-8:].replace(".", "")
    ds.ReferringPhysicianName = ""


def hand_image(rows: int = 256, columns: int = 256, *, seed: int = 0) -> np.ndarray:
    """A bone-bright uint16 test pattern: soft-tissue blob with three bright tubes (not anatomy)."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:columns].astype(np.float64)
    image = 400 + 800 * np.exp(-(((r - rows / 2) / (0.4 * rows)) ** 2 + ((c - columns / 2) / (0.3 * columns)) ** 2))
    for k, col in enumerate(np.linspace(0.35, 0.65, 3) * columns):
        width = 0.035 * columns
        dist = np.abs(c - col)
        tube = np.clip(1 - (dist / width) ** 2, 0, None)
        shaft = (r > 0.25 * rows) & (r < 0.75 * rows)
        image += shaft * 1500 * np.sqrt(tube)
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 4095).astype(np.uint16)


def make_image_dataset(study_uid: str | None = None, *, modality: str = "CR", rows: int = 256,
                       columns: int = 256, body_part: str = "HAND", series_uid: str | None = None,
                       sop_instance_uid: str | None = None, instance_number: int = 1,
                       patient_id: str = "DXRTEST1", pixel_spacing_mm: float = 0.1,
                       laterality: str = "L", seed: int = 0) -> Dataset:
    """A CR (or DX for presentation) image dataset with file meta, ready to save or send.

    ``pixel_spacing_mm`` goes into ImagerPixelSpacing (and PixelSpacing), in mm.
    """
    study_uid = study_uid or generate_uid()
    sop_instance_uid = sop_instance_uid or generate_uid()
    sop_class = CR_IMAGE_STORAGE if modality == "CR" else DX_PRESENTATION_STORAGE
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    _patient_study(ds, study_uid, patient_id)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.Manufacturer = "DXR test samples"
    ds.BodyPartExamined = body_part
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["R", "F"] if laterality == "L" else ["L", "F"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ContentDate = ds.StudyDate
        ds.ContentTime = ds.StudyTime
        ds.DetectorType = "SCINTILLATOR"
        ds.AcquisitionDeviceProcessingDescription = ""
    ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = hand_image(rows, columns, seed=seed).tobytes()
    return ds


def make_sr_dataset(study_uid: str | None = None, *, patient_id: str = "DXRTEST1") -> Dataset:
    """A minimal Comprehensive SR from 'another vendor' (a non-image SOP class)."""
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(COMPREHENSIVE_SR_STORAGE, uid)
    ds.SOPClassUID = COMPREHENSIVE_SR_STORAGE
    ds.SOPInstanceUID = uid
    _patient_study(ds, study_uid or generate_uid(), patient_id)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.Manufacturer = "Other vendor"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    concept = Dataset()
    concept.CodeValue = "18748-4"
    concept.CodingSchemeDesignator = "LN"
    concept.CodeMeaning = "Diagnostic imaging report"
    ds.ConceptNameCodeSequence = [concept]
    ds.ContentDate = "20261127"
    ds.ContentTime = "080000"
    return ds


def save(ds: Dataset, path: os.PathLike | str) -> Path:
    """Write ``ds`` as a DICOM Part 10 file; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_study(directory: os.PathLike | str, n_images: int = 2, *, modality: str = "CR",
                rows: int = 256, columns: int = 256, study_uid: str | None = None,
                patient_id: str = "DXRTEST1") -> tuple[str, list[Path]]:
    """Write a study of ``n_images`` images (one series) to ``directory``; return (StudyInstanceUID, files)."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    files = []
    for k in range(n_images):
        ds = make_image_dataset(study_uid, modality=modality, rows=rows, columns=columns, series_uid=series_uid,
                                instance_number=k + 1, patient_id=patient_id, seed=k,
                                laterality="L" if k % 2 == 0 else "R")
        files.append(save(ds, Path(directory) / f"{ds.SOPInstanceUID}.dcm"))
    return study_uid, files
