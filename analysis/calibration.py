"""From a DICOM dataset to a float image with bone bright, and its pixel size in mm.

* Pixels are decoded by pydicom (with pylibjpeg for JPEG, JPEG-LS, JPEG 2000 and RLE).
* The Modality LUT (RescaleSlope/Intercept or a LUT sequence) is applied where present.
* The VOI LUT is NOT applied by default (``APPLY_VOI_LUT``): it is a display mapping. A window
  (WindowCenter/Width) clips grey values inside the bone and a VOI LUT sequence bends the grey
  scale; either would bias the sub-pixel edge fit, which assumes grey values proportional to
  attenuation. The measured T and W are unchanged by a window (tested).
* MONOCHROME1 (bone dark) is inverted so that bone is bright.
* Pixel size: ``PixelSpacing`` when present (calibrated), else ``ImagerPixelSpacing`` divided by
  ``EstimatedRadiographicMagnificationFactor`` when present, else ``ImagerPixelSpacing``.
  Non-square pixels are refused (``non_square_pixels``): the profile model assumes square ones.
* After the measurement, the hand's own anatomy checks the pixel size
  (:func:`spacing_doubt`): metacarpals far shorter or longer than an adult's mean the pixel size
  is wrong (a guessed one, a resampled export), and T- and Z-scores are then omitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.image_kernels import stored_to_float

APPLY_VOI_LUT = False
"""Apply the dataset's VOI LUT (window or LUT sequence) before measuring; see the module notes."""
MAX_PIXEL_SPACING_MM = 0.25
"""Coarser pixels are refused (``resolution_too_low``): a cortex is only 1-3 mm thick."""
ADULT_MC3_LENGTH_MM = 64.0
"""Typical length of an adult's third metacarpal, mm. Derived from CT of 40 adults (28 men,
12 women; Rothman Institute, Arch Bone Jt Surg 2024): index 67.7, long 66.1, ring 58.0 mm;
women's are a few mm shorter than men's."""
ANATOMY_SCALE_TOLERANCE = 1.25
"""Largest factor, either way, between ADULT_MC3_LENGTH_MM and the traced metacarpals (each scaled
to MC III by its relative length) before the pixel size is doubted (:func:`spacing_doubt`):
adults' MC III spans about 55-75 mm; a pixel size wrong by x1.5 puts a typical hand at 43 or
96 mm."""


@dataclass
class CalibratedImage:
    image: np.ndarray
    """float64 (rows, cols), bone bright, on the Modality-LUT scale (or stored values)."""
    pixel_spacing_mm: float
    pixel_spacing_source: str
    """``PixelSpacing``, ``ImagerPixelSpacing``, ``ImagerPixelSpacing/magnification`` or ``cli``."""


class CalibrationError(ValueError):
    """The dataset cannot be turned into a measurable image; ``reason`` is a result reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def _pair(value) -> tuple[float, float] | None:
    try:
        vals = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(vals) != 2 or not all(np.isfinite(vals)) or min(vals) <= 0:
        return None
    return vals[0], vals[1]


def pixel_spacing_from_dataset(ds) -> tuple[float, float, str] | None:
    """``(row_spacing_mm, column_spacing_mm, source)`` from the header, or None when absent."""
    ps = _pair(ds.get("PixelSpacing")) if "PixelSpacing" in ds else None
    if ps is not None:
        return ps[0], ps[1], "PixelSpacing"
    ips = _pair(ds.get("ImagerPixelSpacing")) if "ImagerPixelSpacing" in ds else None
    if ips is None:
        return None
    mag = ds.get("EstimatedRadiographicMagnificationFactor")
    try:
        mag = float(mag) if mag not in (None, "") else None
    except (TypeError, ValueError):
        mag = None
    if mag is not None and mag > 0 and np.isfinite(mag):
        return ips[0] / mag, ips[1] / mag, "ImagerPixelSpacing/magnification"
    return ips[0], ips[1], "ImagerPixelSpacing"


def check_spacing(spacing_mm: float) -> None:
    """Raise CalibrationError ``resolution_too_low`` for pixels coarser than MAX_PIXEL_SPACING_MM."""
    if not (np.isfinite(spacing_mm) and spacing_mm > 0):
        raise CalibrationError("no_pixel_spacing", f"The pixel size {spacing_mm!r} mm is not a positive number.")
    if spacing_mm > MAX_PIXEL_SPACING_MM:
        raise CalibrationError(
            "resolution_too_low",
            f"The pixels are {spacing_mm:.3f} mm, larger than {MAX_PIXEL_SPACING_MM} mm: too coarse to "
            "measure cortical bone; send the full-resolution image.",
        )


def anatomy_spacing_factor(lengths_mm: dict[str, float]) -> float | None:
    """How many times larger the pixels would have to be for the metacarpals to be typical adult ones.

    ``lengths_mm``: traced lengths (mm, at the pixel size used) of any of metacarpals II-V. Each
    is scaled to MC III by the adult relative lengths; the median over the bones is compared with
    ADULT_MC3_LENGTH_MM. 1.0: typical; 1.4: the bones look 1.4 times too short, so pixels of 1.4
    times the size given would fit. None without a usable length.
    """
    from analysis.locate.joints import RELATIVE_LENGTH

    as_mc3 = [float(v) / RELATIVE_LENGTH[n] for n, v in lengths_mm.items()
              if n in RELATIVE_LENGTH and v is not None and np.isfinite(v) and v > 0]
    if not as_mc3:
        return None
    return ADULT_MC3_LENGTH_MM / float(np.median(as_mc3))


def spacing_doubt(lengths_mm: dict[str, float], pixel_spacing_mm: float) -> str | None:
    """One sentence saying why the pixel size ``pixel_spacing_mm`` (mm) is doubtful, or None.

    Doubtful when the traced metacarpals (``lengths_mm``, mm) are more than
    ANATOMY_SCALE_TOLERANCE times shorter or longer than an adult's (:func:`anatomy_spacing_factor`).
    DXR-BMD scales with the pixel size, so its T- and Z-scores would be wrong by as much; the
    2T/W indices do not depend on it.
    """
    factor = anatomy_spacing_factor(lengths_mm)
    if factor is None or 1.0 / ANATOMY_SCALE_TOLERANCE <= factor <= ANATOMY_SCALE_TOLERANCE:
        return None
    mc3_mm = ADULT_MC3_LENGTH_MM / factor
    return (f"T- and Z-scores omitted: at the given pixel size ({pixel_spacing_mm:.3f} mm) the metacarpals "
            f"measure as if metacarpal III were {mc3_mm:.0f} mm long, an adult's is about "
            f"{ADULT_MC3_LENGTH_MM:.0f} mm; the pixel size looks wrong (about {pixel_spacing_mm * factor:.3f} mm "
            "would fit), so DXR-BMD cannot be compared with reference values.")


def image_from_dataset(ds, pixel_spacing_mm: float | None = None, *, check_resolution: bool = True) -> CalibratedImage:
    """Decode a radiograph into a float64 image with bone bright and its pixel size.

    Parameters
    ----------
    ds : pydicom.Dataset
        A single-frame grayscale radiograph with pixel data.
    pixel_spacing_mm : float, optional
        Overrides the header (source ``cli``).
    check_resolution : bool
        Refuse pixels coarser than MAX_PIXEL_SPACING_MM (``resolution_too_low``); the hand finder
        alone (``dxr-node locate``) works on coarser images and passes False.

    Raises
    ------
    CalibrationError
        ``reason`` is ``unreadable`` (no or undecodable pixel data), ``not_pa_hand`` (colour,
        multi-frame), ``no_pixel_spacing``, ``non_square_pixels`` or ``resolution_too_low``.
    """
    # Pixels first: an unreadable file is an error even when its spacing is also missing.
    image = bone_bright_pixels(ds)
    if pixel_spacing_mm is not None:
        spacing, source = float(pixel_spacing_mm), "cli"
    else:
        found = pixel_spacing_from_dataset(ds)
        if found is None:
            raise CalibrationError(
                "no_pixel_spacing",
                "The image has no pixel spacing (neither PixelSpacing nor ImagerPixelSpacing), so distances "
                "in mm cannot be measured; send the original DICOM from the modality or give the pixel size.",
            )
        row_mm, col_mm, source = found
        if abs(row_mm - col_mm) > 1e-3 * max(row_mm, col_mm):
            raise CalibrationError(
                "non_square_pixels", f"The pixels are not square ({row_mm} x {col_mm} mm); DXR needs square pixels."
            )
        spacing = 0.5 * (row_mm + col_mm)
    if check_resolution:
        check_spacing(spacing)
    return CalibratedImage(image=image, pixel_spacing_mm=spacing, pixel_spacing_source=source)


def bone_bright_pixels(ds) -> np.ndarray:
    """Decoded pixels as float64 with bone bright (Modality LUT applied, MONOCHROME1 inverted).

    Raises
    ------
    CalibrationError
        ``unreadable`` for missing or undecodable pixel data; ``not_pa_hand`` for colour or
        multi-frame images (readable, but not a single radiograph).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds:
        raise CalibrationError("unreadable", "The DICOM file has no pixel data.")
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        samples = 1  # malformed: the decoder below decides whether the pixels are readable
    if samples != 1:
        raise CalibrationError("not_pa_hand", "The image is in colour; DXR needs a grayscale radiograph.")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt or unsupported pixel data
        raise CalibrationError("unreadable", f"The pixel data could not be decoded ({type(exc).__name__}: {exc}).") from exc
    if frames > 1 or arr.ndim != 2:
        raise CalibrationError("not_pa_hand", "The image has several frames; DXR needs one single-frame radiograph.")

    invert = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper() == "MONOCHROME1"
    apply_voi = APPLY_VOI_LUT and ("VOILUTSequence" in ds or "WindowCenter" in ds)
    if "ModalityLUTSequence" not in ds and not apply_voi:
        # Rescale and invert in one pass over the image (numba): a third of the separate
        # numpy steps' time on a 2500 x 3000 image, with the same values bit for bit.
        return stored_to_float(arr, *_rescale(ds), invert)
    if "ModalityLUTSequence" in ds:
        image = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    else:
        image = stored_to_float(arr, *_rescale(ds))
    if apply_voi:
        image = np.asarray(apply_voi_lut(image, ds, prefer_lut=True), dtype=np.float64)
    if invert:
        np.subtract(image.max() + image.min(), image, out=image)
    return np.ascontiguousarray(image)


def _rescale(ds) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)``, ``(1, 0)`` where absent or empty (a slope of 0 too).

    Raises
    ------
    CalibrationError
        ``unreadable`` when either is present but not one finite number (the grey values, and
        so the edge fit, would be meaningless).
    """
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        try:
            raw = ds.get(keyword)  # pydicom may raise here on a malformed DS
            value = float(raw) if raw else default
        except (TypeError, ValueError) as exc:
            raise CalibrationError("unreadable", f"The {keyword} is not a single number ({exc}).") from exc
        if not np.isfinite(value):
            raise CalibrationError("unreadable", f"The {keyword} {value!r} is not a finite number.")
        values.append(value)
    return values[0], values[1]
