"""pyproject.toml lists every Python package: a non-editable install (the Docker image) gets only those."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("analysis", "node") for p in (ROOT / top).rglob("__init__.py")}
    assert found, "no package found under analysis/ or node/"
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
