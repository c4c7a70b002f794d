"""Bounded resources: ``[limits]`` for received data (checked before anything is decoded), and the
``[retention]`` settings (:mod:`node.retention` applies them to the disk).

A hostile or broken peer must not make the node allocate without bound: a Deflated Explicit VR
data set is inflated in bounded steps and refused past ``max_decompressed_bytes`` (a 268 KB
"deflate bomb" would otherwise become 256 MiB, twice), and an image whose header declares more
than ``max_pixel_bytes`` of pixels (Rows x Columns x Samples x Frames x Bits) is refused before
a worker decodes it. Both answer 0xC210 (cannot understand) with the reason, and log it.
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.filereader import _read_file_meta_info, read_preamble

from node.toml_section import Section

__all__ = ["LimitsConfig", "RetentionConfig", "declared_pixel_bytes", "inflated_size_problem", "parse_limits",
           "parse_retention", "pixel_size_problem"]

DEFLATED = "1.2.840.10008.1.2.1.99"
_STEP = 1 << 20


@dataclass(frozen=True)
class LimitsConfig:
    max_decompressed_bytes: int = 256 * 1024**2
    """A Deflated data set larger than this once inflated is refused (0 = no limit)."""
    max_pixel_bytes: int = 64 * 1024**2
    """An image whose header declares more pixel bytes than this is refused (0 = no limit).

    64 MiB is over three times the largest hand radiograph (a 43 cm DX detector at 0.14 mm,
    3072 x 3072 x 16 bits = 18 MiB); 8192 x 8192 at 16 bits (128 MiB) is refused.
    """


def parse_limits(cfg_path: Path, raw: dict[str, Any]) -> LimitsConfig:
    sec = Section(cfg_path, "[limits]", raw.get("limits", {}), {"max_decompressed_bytes", "max_pixel_bytes"})
    return LimitsConfig(
        max_decompressed_bytes=sec.int("max_decompressed_bytes", LimitsConfig.max_decompressed_bytes, 0),
        max_pixel_bytes=sec.int("max_pixel_bytes", LimitsConfig.max_pixel_bytes, 0),
    )


def inflated_size_problem(data: bytes | memoryview | Path, limit: int) -> str | None:
    """Why a Deflated data set (bytes, or a file) is refused (inflated size over ``limit``), or None
    (not Deflated, or small enough).

    Reads and inflates in 1 MiB steps and keeps nothing: memory stays at one step whatever the ratio.
    """
    if not limit:
        return None
    with open(data, "rb") if isinstance(data, Path) else io.BytesIO(data) as fp:
        try:
            read_preamble(fp, force=True)
            syntax = str(_read_file_meta_info(fp).get("TransferSyntaxUID", ""))
        except Exception:
            return None  # the parser will judge the file
        if syntax != DEFLATED:
            return None
        try:
            total = _inflated_size(fp, limit)
        except zlib.error as exc:
            return f"the Deflated data set cannot be inflated ({exc})"
    if total > limit:
        return f"the Deflated data set inflates to more than [limits] max_decompressed_bytes = {limit}"
    return None


def _inflated_size(fp: Any, limit: int) -> int:
    """Bytes the raw deflate stream from ``fp`` inflates to, counting stopped once past ``limit``."""
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    while total <= limit:
        pending = fp.read(_STEP)
        if not pending:
            return total + len(inflater.flush())
        while pending and total <= limit:
            total += len(inflater.decompress(pending, _STEP))
            pending = inflater.unconsumed_tail
    return total


def declared_pixel_bytes(ds: pydicom.Dataset) -> int:
    """Pixel bytes the header declares (0 when it declares no image)."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        bits = int(ds.get("BitsAllocated", 0) or 0)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:  # a corrupt element: instance_problem() refuses the header with its reason
        return 0
    return math.ceil(rows * cols * spp * frames * bits / 8)


def pixel_size_problem(ds: pydicom.Dataset, limit: int) -> str | None:
    """Why an image is refused for its declared size, or None."""
    declared = declared_pixel_bytes(ds)
    if limit and declared > limit:
        return f"the header declares {declared} bytes of pixels, over [limits] max_pixel_bytes = {limit}"
    return None


@dataclass(frozen=True)
class RetentionConfig:
    keep_days: float = 30.0
    """Spool, outputs and outbox files of a delivered study are kept this many days after delivery,
    then deleted with their rows (0 = kept for ever, unless the disk runs low)."""
    purge_below_free_bytes: int = 0
    """Below this free space, delivered studies are purged early, oldest delivery first
    (0 = [disk] min_free_bytes; with that 0 too, never early)."""


def parse_retention(cfg_path: Path, raw: dict[str, Any]) -> RetentionConfig:
    sec = Section(cfg_path, "[retention]", raw.get("retention", {}), {"keep_days", "purge_below_free_bytes"})
    return RetentionConfig(
        keep_days=sec.number("keep_days", RetentionConfig.keep_days, 0.0),
        purge_below_free_bytes=sec.int("purge_below_free_bytes", RetentionConfig.purge_below_free_bytes, 0),
    )
