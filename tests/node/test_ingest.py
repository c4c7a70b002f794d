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
