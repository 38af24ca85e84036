"""OlmoEarth: the wrapper equals the package's own forward; loading is strict and offline.

Models are random-init OlmoEarth models built by `olmoearth-pretrain-minimal` itself
(`OlmoEarthPretrain_v1`), written as release bundles (config.json + weights.pth) or olmo-core
checkpoints, then loaded through Helios. nano and tiny run by default; base and large are
marked slow. The contract of every baseline (tests/evals/baselines/test_contract.py) runs over
OlmoEarth v1 and v1.2 here too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from olmoearth_pretrain_minimal import Normalizer as PackageNormalizer
from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.latent_mim import LatentMIMConfig
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
    MaskedOlmoEarthSample,
)

from helios.data.modalities import get_modality
from helios.data.sample import MaskedBatch, MaskValue
from helios.evals.baselines._olmoearth_load import PRESET_SIZES, preset_config
from helios.evals.baselines.olmoearth import OlmoEarthEncoder
from helios.evals.models import ModelSpec, load_model

from .conftest import make_batch

# The contract of every baseline, run over OlmoEarth through the `case` fixture below.
from .test_contract import (  # noqa: F401
    test_backward,
    test_forward_shapes_and_pooling,
    test_hidden_tokens_are_ignored,
    test_missing_pixels_hide_their_tokens,
    test_normalizer_handles_raw_inputs,
    test_state_dict_round_trip,
    test_surface,
    test_unaccepted_inputs_are_rejected,
)

READS = ("sentinel2_l2a", "sentinel1", "landsat")
GOLDEN = Path(__file__).parents[2] / "runner" / "golden" / "rslearn_sample_model.json"
SIZES = [
    ("nano", "v1"),
    ("nano", "v1.1"),
    ("nano", "v1.2"),
    ("tiny", "v1"),
    ("tiny", "v1.2"),
    pytest.param("base", "v1", marks=pytest.mark.slow),
    pytest.param("base", "v1.2", marks=pytest.mark.slow),
    pytest.param("large", "v1", marks=pytest.mark.slow),
]


@pytest.fixture(params=["v1", "v1.2"], scope="module")
def case(request: pytest.FixtureRequest) -> tuple[OlmoEarthEncoder, tuple[str, ...]]:
    return OlmoEarthEncoder.random("nano", request.param, seed=0), READS


def package_model(size: str, version: str, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """`OlmoEarthPretrain_v1(size, version)` seeded, and the LatentMIMConfig it was built from."""
    seen: list[LatentMIMConfig] = []
    build = LatentMIMConfig.build

    def record(self: LatentMIMConfig) -> Any:
        seen.append(self)
        return build(self)

    torch.manual_seed(seed)
    with mock.patch.object(LatentMIMConfig, "build", record):
        model = OlmoEarthPretrain_v1(size, version)
    return model.eval(), seen[0].as_config_dict()


def write_bundle(root: Path, size: str, version: str, seed: int = 0) -> tuple[Path, Any]:
    """A release bundle (config.json + weights.pth of the whole LatentMIM) and its model."""
    model, config = package_model(size, version, seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model": config}))
    torch.save(model.model.state_dict(), root / "weights.pth")
    return root, model


def batch_and_sample(
    version_groups: int, size: int = 16, steps: int = 3, patch: int = 4, hide: bool = False
) -> tuple[MaskedBatch, MaskedOlmoEarthSample]:
    """A Helios batch of S2 L2A + S1 and the OlmoEarth sample it must become, built apart.

    With `hide`, sample 0's top-left 2 x 2 tokens are DECODER (all band sets) and sample 1's
    last timestep is MISSING.
    """
    batch = make_batch(("sentinel2_l2a", "sentinel1"), 2, size, steps, patch, seed=3)
    batch.timestamps[:, :, 1] = torch.tensor([3, 7, 12])[:steps]
    fields: dict[str, Any] = {}
    for m in ("sentinel2_l2a", "sentinel1"):
        groups = version_groups if m == "sentinel2_l2a" else 1
        tok = torch.zeros(2, size // patch, size // patch, steps, groups, dtype=torch.int8)
        if hide:
            batch.masks[0][m][0, :2, :2] = MaskValue.DECODER
            batch.masks[0][m][1, :, :, -1] = MaskValue.MISSING
            tok[0, :2, :2] = MaskValue.DECODER
            tok[1, :, :, -1] = MaskValue.MISSING
        pixels = tok.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
        # under hidden tokens OlmoEarth gets 0 (its resize at patch < 8 would leak the data)
        fields[m] = torch.where((pixels != 0).any(-1, keepdim=True), 0.0, batch.data[m])
        fields[f"{m}_mask"] = pixels
    months = batch.timestamps[..., 1] - 1
    fields["timestamps"] = torch.stack(
        [batch.timestamps[..., 0], months, batch.timestamps[..., 2]], -1
    )
    return batch, MaskedOlmoEarthSample(**fields)


@pytest.mark.parametrize("version", list(PRESET_SIZES))
def test_presets_are_the_packages(version: str) -> None:
    """The (size, version) configs Helios builds are the package's, for every published size."""
    seen: list[LatentMIMConfig] = []

    def stop(self: LatentMIMConfig) -> Any:
        seen.append(self)
        raise InterruptedError

    for size in PRESET_SIZES[version]:
        seen.clear()

        with mock.patch.object(LatentMIMConfig, "build", stop), pytest.raises(InterruptedError):
            OlmoEarthPretrain_v1(size, version)  # type: ignore[arg-type]
        assert preset_config(size, version) == seen[0].encoder_config.as_config_dict(), size  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "version"), SIZES)
@pytest.mark.parametrize("hide", [False, True])
def test_embeddings_equal_the_packages_forward(tmp_path, size, version, hide) -> None:
    root, model = write_bundle(tmp_path / f"{size}-{version}", size, version)
    enc = OlmoEarthEncoder.from_pretrained(root, size, version)
    assert enc.embed_dim == model.encoder.embedding_size and enc.version == version
    groups = 3 if version == "v1" else 1
    batch, sample = batch_and_sample(groups, hide=hide)
    with torch.no_grad():
        ours = enc(batch)
        ref = model.encoder(sample, patch_size=4, fast_pass=not hide)["tokens_and_masks"]
    worst = 0.0
    for m in ("sentinel2_l2a", "sentinel1"):
        want_mask = getattr(ref, f"{m}_mask")
        vis = want_mask == MaskValue.ENCODER.value
        assert torch.equal(ours.masks[f"olmoearth_{m}"].long(), want_mask.long()), m
        got, want = ours.tokens[f"olmoearth_{m}"], getattr(ref, m)
        assert got.shape == want.shape
        worst = max(worst, float((got[vis] - want[vis]).abs().max()))
        assert (got[~vis] == 0).all()
    assert worst <= 1e-5, worst
    print(f"{size} {version} hide={hide}: max |ours - package| = {worst:.2e}")


def test_real_dates_reach_the_encoder(tmp_path) -> None:
    enc = OlmoEarthEncoder.random("nano", "v1.2")
    batch, _ = batch_and_sample(1)
    sample, _ = enc.to_sample(batch)
    assert sample.timestamps[0].tolist() == [[1, 2, 2020], [1, 6, 2020], [1, 11, 2020]]
    moved = make_batch(("sentinel2_l2a",), 1, 16, 3, seed=3)
    with torch.no_grad():
        a = enc(moved).pool()
        moved.timestamps[:, :, 1] = torch.tensor([9, 10, 11])
        b = enc(moved).pool()
    assert not torch.allclose(a, b)


def test_v1_1_hidden_band_sets_are_zeroed_not_hidden() -> None:
    """One v1.1 token spans all S2 band sets: it stays visible, hidden sets' bands read 0."""
    enc = OlmoEarthEncoder.random("nano", "v1.1")
    batch = make_batch(("sentinel2_l2a",), 1, 8, 1)
    batch.masks[0]["sentinel2_l2a"][..., 2] = MaskValue.DECODER  # B01, B09
    sample, masks = enc.to_sample(batch)
    assert (masks["sentinel2_l2a"] == MaskValue.ENCODER).all()
    order = Modality.get("sentinel2_l2a").band_order
    hidden = [order.index("B01"), order.index("B09")]
    assert (sample.sentinel2_l2a[..., hidden] == 0).all()
    assert (sample.sentinel2_l2a[..., : hidden[0]] == batch.data["sentinel2_l2a"][..., :10]).all()


def test_normalizer_is_the_published_one() -> None:
    enc = OlmoEarthEncoder.random("nano", "v1")
    rng = np.random.default_rng(0)
    for m in READS:
        raw = rng.uniform(-30, 12000, size=(2, 4, 4, 2, get_modality(m).num_bands))
        want = PackageNormalizer(std_multiplier=2.0).normalize(Modality.get(m), raw)
        np.testing.assert_allclose(enc.normalizer(m, raw.astype(np.float32)), want, atol=1e-5)
    golden = json.loads(GOLDEN.read_text())["normalization"]["stats"]
    a, b = enc.normalizer.bounds("sentinel2_l2a")
    order = get_modality("sentinel2_l2a").band_order
    mean = np.array([golden[band]["mean"] for band in order])
    std = np.array([golden[band]["std"] for band in order])
    np.testing.assert_array_equal(a, mean - 2 * std)
    np.testing.assert_array_equal(b, mean + 2 * std)


@pytest.mark.filterwarnings("ignore:.*single process")
def test_olmo_core_checkpoint_folder(tmp_path) -> None:
    import torch.distributed.checkpoint as dcp

    bundle, model = write_bundle(tmp_path / "bundle", "nano", "v1")
    ckpt = tmp_path / "step100"
    ckpt.mkdir()
    (ckpt / "config.json").write_text((bundle / "config.json").read_text())
    state = {"model": model.model.state_dict(), "optim": {"step": torch.tensor(100)}}
    dcp.save(state, checkpoint_id=str(ckpt / "model_and_optim"))
    a, b = OlmoEarthEncoder.from_pretrained(bundle), OlmoEarthEncoder.from_pretrained(ckpt)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((bundle / "config.json").read_text())
    del state["model"]["encoder.norm.bias"]
    dcp.save(state, checkpoint_id=str(broken / "model_and_optim"))
    with pytest.raises(ValueError, match=r"1 missing: \['norm.bias'\]"):
        OlmoEarthEncoder.from_pretrained(broken)


def _rewrite(root: Path, edit: Any) -> Path:
    state = torch.load(root / "weights.pth", weights_only=True)
    torch.save(edit(dict(state)), root / "weights.pth")
    return root


def test_a_wrong_or_missing_key_fails_loudly(tmp_path) -> None:
    root, _ = write_bundle(tmp_path / "b", "nano", "v1")
    key = "encoder.blocks.0.attn.q.weight"

    def rename(s: dict) -> dict:
        s["encoder.blocks.0.attn.query.weight"] = s.pop(key)
        return s

    _rewrite(root, rename)
    with pytest.raises(ValueError) as err:
        OlmoEarthEncoder.from_pretrained(root)
    assert "1 missing: ['blocks.0.attn.q.weight']" in str(err.value)
    assert "1 unexpected: ['blocks.0.attn.query.weight']" in str(err.value)
    root, _ = write_bundle(tmp_path / "c", "nano", "v1")
    _rewrite(root, lambda s: {k: v for k, v in s.items() if k != "encoder.norm.weight"})
    with pytest.raises(ValueError, match=r"missing: \['norm.weight'\]"):
        OlmoEarthEncoder.from_pretrained(root)
    # torchgeo's silent failure: every key under another prefix
    _rewrite(root, lambda s: {f"model.encoder.0.model.{k}": v for k, v in s.items()})
    with pytest.raises(ValueError, match="no encoder.. keys"):
        OlmoEarthEncoder.from_pretrained(root)
    _rewrite(root, lambda s: {"encoder.x": torch.zeros(1), "head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"outside an OlmoEarth model: \['head.weight'\]"):
        OlmoEarthEncoder.from_pretrained(root)


def test_a_wrong_size_is_refused(tmp_path) -> None:
    nano, _ = write_bundle(tmp_path / "nano", "nano", "v1")
    tiny, _ = write_bundle(tmp_path / "tiny", "tiny", "v1")
    with pytest.raises(ValueError, match="describes nano v1 .128 wide, 4 blocks., not tiny"):
        OlmoEarthEncoder.from_pretrained(nano, size="tiny")
    with pytest.raises(ValueError, match="describes OlmoEarth v1, not v1.2"):
        OlmoEarthEncoder.from_pretrained(nano, version="v1.2")
    (tiny / "weights.pth").replace(nano / "weights.pth")  # tiny weights, nano config
    with pytest.raises(ValueError, match=r"weights are tiny \(192 wide, 12 blocks\).*wrong size"):
        OlmoEarthEncoder.from_pretrained(nano)


def test_a_hub_id_is_never_downloaded(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    for name in ("OlmoEarth-v1-Nano", "allenai/OlmoEarth-v1-Nano", "OLMOEARTH_V1_NANO"):
        with pytest.raises(FileNotFoundError) as err:
            OlmoEarthEncoder.from_pretrained(name)
        msg = str(err.value)
        assert "is not on this machine" in msg and "does not download" in msg
        assert "huggingface-cli download allenai/OlmoEarth-v1-Nano config.json weights.pth" in msg
    with pytest.raises(FileNotFoundError, match="no OlmoEarth model id"):
        OlmoEarthEncoder.from_pretrained(tmp_path / "nowhere")
    # the same files in the cache's layout are found
    snap = cache / "models--allenai--OlmoEarth-v1-Nano" / "snapshots" / "abc123"
    write_bundle(snap, "nano", "v1")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc123")
    assert OlmoEarthEncoder.from_pretrained("OlmoEarth-v1-Nano").source == str(snap)


def test_loader_kinds(tmp_path) -> None:
    random = load_model(ModelSpec("olmoearth", options={"size": "tiny", "version": "v1.2"}))
    assert isinstance(random.encoder, OlmoEarthEncoder) and random.encoder.embed_dim == 192
    assert random.encoder.source == "random init" and random.patch_size == 4
    root, _ = write_bundle(tmp_path / "b", "nano", "v1.2")
    loaded = load_model(ModelSpec("olmoearth", str(root), options={"size": "nano"}))
    assert loaded.encoder.source == str(root) and loaded.normalizer is loaded.encoder.normalizer
    with pytest.raises(ValueError, match="not tiny"):
        load_model(ModelSpec("olmoearth", str(root), options={"size": "tiny"}))
