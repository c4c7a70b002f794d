"""The free-space watermark (node/disk.py)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from node.disk import DiskWatermark, free_bytes

# Other processes write while a test runs: two readings of one filesystem agree to this (bytes).
TOLERANCE_BYTES = 256 * 1024**2


def test_free_bytes_matches_the_filesystem(tmp_path: Path):
    assert abs(free_bytes(tmp_path) - shutil.disk_usage(tmp_path).free) < TOLERANCE_BYTES


def test_free_bytes_of_a_path_not_created_yet_is_its_parents(tmp_path: Path):
    missing = tmp_path / "not" / "yet" / "there"
    assert not missing.exists()
    assert abs(free_bytes(missing) - free_bytes(tmp_path)) < TOLERANCE_BYTES


def test_real_filesystem_against_impossible_and_trivial_watermarks(tmp_path: Path):
    full = DiskWatermark(tmp_path, 2**62).check()  # more than any disk: a full disk
    assert not full.ok and full.free_bytes > 0 and "below" in full.message
    assert DiskWatermark(tmp_path, 1).check().ok


def test_each_crossing_is_logged_once_and_space_coming_back_is_accepted(tmp_path: Path, caplog):
    readings = iter([5000, 900, 800, 999, 1000, 4000, 10])
    wm = DiskWatermark(tmp_path, 1000, free_bytes_fn=lambda _: next(readings))
    with caplog.at_level(logging.INFO, logger="dxr.node.disk"):
        oks = [wm.check().ok for _ in range(7)]
    assert oks == [True, False, False, False, True, True, False]
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == ["WARNING", "INFO", "WARNING"]
    assert "900 bytes" in messages[0][1] and "refusing" in messages[0][1]
    assert "1000 bytes" in messages[1][1] and "accepting" in messages[1][1]


def test_first_reading_below_is_logged(tmp_path: Path, caplog):
    wm = DiskWatermark(tmp_path, 1000, free_bytes_fn=lambda _: 10)
    with caplog.at_level(logging.WARNING, logger="dxr.node.disk"):
        assert not wm.accepting()
    assert len(caplog.records) == 1


def test_zero_watermark_never_refuses(tmp_path: Path):
    assert DiskWatermark(tmp_path, 0, free_bytes_fn=lambda _: 0).check().ok


def test_unreadable_filesystem_refuses_with_a_log_line(tmp_path: Path, caplog):
    def broken(_):
        raise OSError(5, "Input/output error")

    with caplog.at_level(logging.ERROR, logger="dxr.node.disk"):
        state = DiskWatermark(tmp_path, 1, free_bytes_fn=broken).check()
    assert not state.ok and state.free_bytes == 0
    assert any("Input/output error" in r.getMessage() for r in caplog.records)


def test_negative_watermark_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError):
        DiskWatermark(tmp_path, -1)
