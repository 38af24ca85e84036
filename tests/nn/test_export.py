"""Exported encoder files: parts named by class path, and files written before parts existed."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from helios.data.normalize import Normalizer
from helios.nn.encodings import RopePosition, SinCosPosition
from helios.nn.export import EncoderConfig, export_encoder, load_encoder
from tests.nn.conftest import make_batch
from tests.nn.test_encoder import ScaledBlock

MODS = ["sentinel2_l2a", "sentinel1"]
SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def _tokens(encoder: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return encoder.eval()(make_batch(MODS, seed=4)).tokens["sentinel2_l2a"]


def test_an_encoder_file_from_before_the_parts_still_loads(tmp_path: Path) -> None:
    """Files of earlier versions say `position: sincos` and have no block or norm entry."""
    config = EncoderConfig(**SMALL)
    torch.manual_seed(0)
    encoder = config.build(MODS)
    path = export_encoder(tmp_path / "encoder.pt", encoder, config, Normalizer(), patch_size=4)
    payload = torch.load(path, weights_only=True)
    old = {k: v for k, v in payload["config"].items() if k not in ("block_layer", "norm_layer")}
    assert old["position"] == "sincos"
    torch.save({**payload, "config": old}, tmp_path / "old.pt")
    loaded = load_encoder(tmp_path / "old.pt")
    assert loaded.config == config
    assert isinstance(loaded.encoder.position, SinCosPosition)
    assert torch.equal(_tokens(loaded.encoder), _tokens(encoder))


def test_parts_by_class_path_round_trip_through_a_plain_file(tmp_path: Path) -> None:
    config = EncoderConfig(
        **SMALL,
        position="helios.nn.encodings.RopePosition",
        block_layer="tests.nn.test_encoder.ScaledBlock",
        norm_layer="torch.nn.RMSNorm",
    )
    encoder = config.build(MODS)
    assert isinstance(encoder.position, RopePosition) and isinstance(encoder.blocks[0], ScaledBlock)
    path = export_encoder(tmp_path / "encoder.pt", encoder, config, Normalizer(), patch_size=4)
    saved = torch.load(path, weights_only=True)["config"]  # plain strings only
    assert saved == asdict(config)
    assert all(isinstance(saved[k], str) for k in ("position", "block_layer", "norm_layer"))
    loaded = load_encoder(path)
    assert isinstance(loaded.encoder.norm, torch.nn.RMSNorm)
    assert torch.equal(_tokens(loaded.encoder), _tokens(encoder))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("position", "alibi", "unknown PositionEncoding 'alibi'.*short names: rope, sincos"),
        ("position", "torch.nn.LayerNorm", "not a helios.nn.encodings.PositionEncoding"),
        ("block_layer", "tests.nn.nowhere.Block", "cannot import Module"),
        ("norm_layer", "LayerNorm", "give an import path"),
    ],
)
def test_unknown_parts_fail_when_the_config_is_made(field: str, value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EncoderConfig(**{field: value})
