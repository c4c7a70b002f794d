"""The receive path under corrupt input: every byte string gets an answer, nothing escapes."""

from __future__ import annotations

import logging
import random
import warnings

from node.dicom import STATUS
from node.receive.ingest import ingest
from node.spool import Store
from tests.dicom_samples import make_image_dataset

from tests.node.node_helpers import encode, make_config


def test_corrupted_and_truncated_instances_always_get_a_status(tmp_path):
    cfg = make_config(tmp_path)
    store = Store(cfg.data_dir)
    base = encode(make_image_dataset(rows=8, columns=8))
    rng = random.Random(1)  # fixed seed: the same 1500 corruptions every run
    outcomes = set()
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the garbage, as it should
            for _ in range(1500):
                data = bytearray(base)
                for _ in range(rng.randint(1, 20)):
                    data[rng.randrange(132, len(data))] = rng.randrange(256)
                if rng.random() < 0.3:
                    data = data[: rng.randrange(132, len(data))]
                outcome = ingest(store, cfg, bytes(data), calling_ae="FUZZ")
                assert outcome.status in STATUS.values()
                outcomes.add(outcome.outcome)
                if outcome.outcome in ("stored", "reopened"):
                    [rec] = [r for r in store.study_instances(outcome.study_instance_uid)
                             if r.sop_instance_uid == outcome.sop_instance_uid]
                    assert (store.data_dir / rec.path).read_bytes() == bytes(data)
    finally:
        logging.disable(logging.NOTSET)
    assert {"invalid", "stored"} <= outcomes  # both branches really ran


def test_large_pixel_data_is_length_checked_without_being_read(tmp_path):
    """Pixel data over DEFER_BYTES is not copied by the header parse, yet a large image cut short
    inside it is still refused 0xA900 and a whole one is spooled byte for byte."""
    from node.receive.ingest import DEFER_BYTES, parse_header

    cfg = make_config(tmp_path)
    store = Store(cfg.data_dir)
    ds = make_image_dataset(rows=1024, columns=1024)  # 2 MiB of 16-bit pixels
    assert len(ds.PixelData) > DEFER_BYTES
    whole = encode(ds)
    parsed = parse_header(whole)
    assert parsed.get_item("PixelData", keep_deferred=True).value is None  # never read
    for cut in (len(whole) - 700, len(whole) // 2):
        outcome = ingest(store, cfg, whole[:cut], calling_ae="CUT")
        assert (outcome.outcome, outcome.status) == ("invalid", STATUS["dataset_mismatch"]), outcome
        assert "pixel data holds" in outcome.message
    outcome = ingest(store, cfg, whole, calling_ae="WHOLE")
    assert outcome.outcome == "stored", outcome
    [rec] = store.study_instances(outcome.study_instance_uid)
    assert (store.data_dir / rec.path).read_bytes() == whole
