"""Fixtures for the integration tests: one Orthanc for the session, nodes per test.

Every test here is marked ``integration`` and skipped, with the missing program named, when
Orthanc, DCMTK or the ``dxr-node`` script is not installed (``make test`` installs them).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import dicom_samples
from tests.integration.servers import NodeProcess, OrthancServer, missing_tools

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = missing_tools()
    skip = pytest.mark.skip(reason="integration tests need " + ", ".join(missing)) if missing else None
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """The PACS: a real Orthanc whose Lua script routes CR/DX to the modality ``dxrnode``.

    Shared by the session; tests keep apart by using their own StudyInstanceUIDs. A test's
    node registers itself with ``orthanc.route_to_node(node)`` (``routed_node`` does it).
    """
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), aet="ORTHANC", node_aet="DXRNODE")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def node_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., NodeProcess]]:
    """Make (not start) :class:`NodeProcess` objects in this test's tmp dir; all are stopped after.

    Keyword arguments go to :class:`NodeProcess`. The node log tail is printed at teardown so
    a failing test shows what the node said.
    """
    nodes: list[NodeProcess] = []
    counter = itertools.count(1)

    def make(**kwargs) -> NodeProcess:
        node = NodeProcess(tmp_path / f"node{next(counter)}", **kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
        print(f"--- {node.log_path} (tail) ---\n{node.log_tail(80)}")


@pytest.fixture
def routed_node(orthanc: OrthancServer, node_factory: Callable[..., NodeProcess]) -> NodeProcess:
    """A running node fed by the session Orthanc's routing and sending its results back to it."""
    node = node_factory(destinations=[orthanc.as_destination("pacs")], quiet_period_seconds=1.0)
    node.start()
    orthanc.route_to_node(node)
    return node


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., tuple[str, list[Path]]]:
    """``write_study(n_images=2, **kw) -> (StudyInstanceUID, [files])`` of small synthetic CR images."""
    counter = itertools.count(1)

    def make(n_images: int = 2, **kwargs) -> tuple[str, list[Path]]:
        return dicom_samples.write_study(tmp_path / f"study{next(counter)}", n_images, **kwargs)

    return make


@pytest.fixture
def write_phantom_study(tmp_path: Path) -> Callable[..., tuple[str, list[Path]]]:
    """``write_phantom_study(n_images=1, **make_dataset_kw) -> (StudyInstanceUID, [files])``.

    Realistic full-size PA hand phantoms (tests/phantom.py, ~2400 x 1800 px), one per image,
    alternating left/right, in one new study.
    """
    from pydicom.uid import generate_uid

    from tests.phantom import make_dataset, make_hand

    counter = itertools.count(1)

    def make(n_images: int = 1, **kwargs) -> tuple[str, list[Path]]:
        directory = tmp_path / f"phantom{next(counter)}"
        directory.mkdir()
        study_uid, series_uid = generate_uid(), generate_uid()
        files = []
        for k in range(n_images):
            image, truth = make_hand(seed=k, laterality="L" if k % 2 == 0 else "R")
            ds = make_dataset(image, truth, study_uid=study_uid, series_uid=series_uid, **kwargs)
            # The node's default rules ignore Manufacturer "DXR Node*" (its own outputs); an input
            # from a modality must not look like one.
            ds.Manufacturer = "Phantom Modality Co"
            ds.InstanceNumber = k + 1
            files.append(dicom_samples.save(ds, directory / f"{ds.SOPInstanceUID}.dcm"))
        return study_uid, files

    return make

