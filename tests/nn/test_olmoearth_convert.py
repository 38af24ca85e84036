"""OlmoEarth v1 weights converted to a FlexiEncoder equal the upstream package's own forward.

The reference is `olmoearth-pretrain-minimal` 0.1.5: randomly initialised OlmoEarth v1 models
(nano and tiny; base and large are `slow`), every parameter perturbed so that no zero bias,
unit norm or zero band-set embedding hides a mapping error, on S2 L2A + S1 + Landsat samples
with real-looking dates at patch sizes 8, 4 and 2. Inputs have no missing tokens (OlmoEarth's
eval forward encodes every token then); masked inputs are compared with its training forward.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch
from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn import encodings as upstream
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import (
    EncoderConfig as OlmoEarthEncoderConfig,
)
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.tokenization import TokenizationConfig
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
    MaskedOlmoEarthSample,
)
from torch import Tensor, nn

from helios.checkpoint import UnsafeCheckpointError
from helios.data.modalities import get_modality
from helios.data.normalize import NormMethod
from helios.data.sample import MaskedBatch, MaskValue
from helios.nn.encoder import FlexiEncoder
from helios.nn.encodings import olmoearth_month_encoding, olmoearth_sincos, olmoearth_space
from helios.nn.export import EncoderConfig, load_encoder
from helios.nn.olmoearth import HELIOS_NAMES, convert_olmoearth, export_olmoearth
from helios.nn.patch_embed import pool_to_reference
from helios.train.pretrain import LatentMIM
from tests.nn.conftest import data_shape, make_batch, mask_shape

REPO = Path(__file__).resolve().parents[2]
RSLEARN_FIXTURE = "shared/fixtures/rslearn_olmoearth_nano/checkpoint.ckpt"
OE_NAMES = {helios: oe for oe, helios in HELIOS_NAMES.items()}
V1_MODALITIES = [
    "sentinel2_l2a",
    "sentinel1",
    "landsat",
    "worldcover",
    "srtm",
    "openstreetmap_raster",
    "wri_canopy_height",
    "cdl",
    "worldcereal",
]
SATELLITES = ["sentinel2_l2a", "sentinel1", "landsat"]
DATES = [  # (day, month 1..12, year) per timestep, one row per sample
    [(15, 3, 2022), (2, 5, 2022), (28, 7, 2022), (11, 11, 2022)],
    [(1, 1, 2021), (9, 4, 2021), (30, 6, 2021), (19, 12, 2021)],
]
TOL = 1e-5


def perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every trainable vector (biases, norms) and band-set embedding moved off its init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.requires_grad and (p.ndim == 1 or "channel_embeddings" in name):
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return module


def olmoearth_encoder(size: str = "nano") -> nn.Module:
    """A seeded, perturbed OlmoEarth v1 encoder (eval mode, no drop path)."""
    torch.manual_seed(0)
    return perturb(OlmoEarthPretrain_v1(size, "v1", drop_path=0.0).encoder).eval()


def helios_batch(
    modalities: list[str], patch: int, size: int = 16, steps: int = 3, seed: int = 0
) -> MaskedBatch:
    """Normalized-looking data, every token ENCODER, real dates."""
    gen = torch.Generator().manual_seed(seed)
    data = {m: torch.randn(data_shape(m, 2, size, steps), generator=gen) for m in modalities}
    masks = {
        m: torch.zeros(mask_shape(m, 2, size, steps, patch), dtype=torch.int8) for m in modalities
    }
    timestamps = torch.tensor([row[:steps] for row in DATES])
    return MaskedBatch(data, [masks], timestamps, torch.zeros(2, 2), patch, [0, 1])


def olmoearth_sample(batch: MaskedBatch) -> MaskedOlmoEarthSample:
    """The same batch as OlmoEarth reads it: pixel masks, no T axis on static maps, months 0..11."""
    p, fields = batch.patch_size, {}
    for name, x in batch.data.items():
        spec = get_modality(name)
        x = pool_to_reference(x, spec)  # OSM onto the 10 m grid, where OlmoEarth expects it
        mask = batch.masks[0][name].repeat_interleave(p, 1).repeat_interleave(p, 2)
        if not spec.is_multitemporal:
            x, mask = x[:, :, :, 0], mask[:, :, :, 0]
        oe = OE_NAMES.get(name, name)
        fields[oe], fields[f"{oe}_mask"] = x, mask
    timestamps = batch.timestamps.clone()
    timestamps[..., 1] -= 1
    return MaskedOlmoEarthSample(timestamps=timestamps, **fields)


def max_diff(ours: FlexiEncoder, theirs: nn.Module, batch: MaskedBatch) -> float:
    """Largest |difference| over the tokens both encode (ENCODER slots)."""
    with torch.no_grad():
        mine = ours(batch).tokens
        sample = olmoearth_sample(batch)
        fast = not theirs.training
        ref = theirs(sample, patch_size=batch.patch_size, fast_pass=fast)["tokens_and_masks"]
    worst = 0.0
    for name, tokens in mine.items():
        expected: Tensor = getattr(ref, OE_NAMES.get(name, name))
        expected = expected if expected.ndim == 6 else expected.unsqueeze(3)
        seen = batch.masks[0][name] == MaskValue.ENCODER
        worst = max(worst, float((tokens[seen] - expected[seen]).abs().max()))
    return worst


@pytest.fixture(scope="module", params=["nano", "tiny"])
def converted(request: pytest.FixtureRequest) -> tuple[FlexiEncoder, nn.Module]:
    theirs = olmoearth_encoder(request.param)
    ours, _ = convert_olmoearth(theirs.state_dict(), discard_projection=True)
    return ours, theirs


@pytest.mark.parametrize("patch", [8, 4, 2])
def test_converted_encoder_equals_olmoearth(converted, patch: int) -> None:
    ours, theirs = converted
    assert max_diff(ours, theirs, helios_batch(SATELLITES, patch)) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("size", ["base", "large"])
def test_large_sizes_equal_olmoearth(size: str) -> None:
    theirs = olmoearth_encoder(size)
    ours, config = convert_olmoearth(theirs.state_dict(), size=size, discard_projection=True)
    assert (config.embed_dim, config.depth) == {"base": (768, 12), "large": (1024, 24)}[size]
    for patch in (8, 4):
        assert max_diff(ours, theirs, helios_batch(SATELLITES, patch, steps=2)) <= TOL


def test_every_v1_modality_and_the_wri_name() -> None:
    theirs = olmoearth_encoder()
    ours, _ = convert_olmoearth(theirs.state_dict(), discard_projection=True)
    assert list(ours.modalities) == V1_MODALITIES
    assert max_diff(ours, theirs, helios_batch(V1_MODALITIES, 4, steps=2)) <= TOL


def test_olmoearth_codes_are_the_upstream_functions_bit_for_bit() -> None:
    n, cpu = 48, torch.device("cpu")
    steps = torch.arange(9)
    assert torch.equal(olmoearth_sincos(steps, n), upstream.get_1d_sincos_pos_encoding(steps, n))
    assert torch.equal(
        olmoearth_month_encoding(torch.arange(1, 13), n), upstream.get_month_encoding_table(n)
    )
    for patch in (1, 2, 4, 8):
        ratio = torch.ones(1) * float(patch)
        ref = upstream.get_2d_sincos_pos_encoding_with_resolution(5, ratio, n, cpu)[0]
        assert torch.equal(olmoearth_space(5, 5, patch, n, cpu).reshape(25, n), ref)


def test_band_orders_and_band_sets_are_helios_registry() -> None:
    groups = TokenizationConfig()
    for name in V1_MODALITIES:
        spec, oe = get_modality(name), Modality.get(OE_NAMES.get(name, name))
        sets = [[oe.band_order[i] for i in idx] for idx in groups.get_bandset_indices(oe.name)]
        assert sets == [list(spec.band_order[s]) for s in spec.band_set_slices()], name


def test_visible_tokens_match_olmoearth_training_forward() -> None:
    """With masked tokens Helios encodes only ENCODER ones, as OlmoEarth's training forward."""
    theirs = olmoearth_encoder().train()
    ours, _ = convert_olmoearth(theirs.state_dict(), discard_projection=True)
    batch = make_batch(SATELLITES, patch_size=4, ref_size=16, timesteps=3, seed=3)
    assert max_diff(ours.train(), theirs, batch) <= TOL


def test_helios_default_parts_would_not_match() -> None:
    theirs = olmoearth_encoder()
    ours, config = convert_olmoearth(theirs.state_dict(), discard_projection=True)
    plain = replace(config, position="sincos", embedding_layer=EncoderConfig.embedding_layer)
    default = plain.build(list(ours.modalities)).eval()
    default.load_state_dict(ours.state_dict())
    assert max_diff(default, theirs, helios_batch(SATELLITES, 4)) > 1e-2


def test_qk_norm_converts() -> None:
    torch.manual_seed(0)
    config = OlmoEarthEncoderConfig(
        supported_modality_names=["sentinel2_l2a", "sentinel1"],
        embedding_size=64,
        num_heads=4,
        depth=2,
        mlp_ratio=2.0,
        drop_path=0.0,
        qk_norm=True,
    )
    theirs = perturb(config.build()).eval()
    ours, converted = convert_olmoearth(theirs.state_dict(), num_heads=4, discard_projection=True)
    assert converted.qk_norm and converted.num_heads == 4 and converted.mlp_ratio == 2.0
    assert max_diff(ours, theirs, helios_batch(["sentinel2_l2a", "sentinel1"], 4)) <= TOL


def test_bundle_folder_and_prefixed_state_dicts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    wrapper = OlmoEarthPretrain_v1("nano", "v1", drop_path=0.0)
    perturb(wrapper.model.encoder)
    config = {"model": {"encoder_config": {"embedding_size": 128, "depth": 4, "num_heads": 8}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(wrapper.model.state_dict(), tmp_path / "weights.pth")  # encoder., decoder., ...
    expected, _ = convert_olmoearth(wrapper.model.encoder.state_dict(), discard_projection=True)
    for source in (tmp_path, wrapper.state_dict()):  # a bundle folder; model.encoder. keys
        ours, _ = convert_olmoearth(source, discard_projection=True)
        for key, value in expected.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), key


def test_rslearn_checkpoint_with_the_legacy_time_table() -> None:
    """The rslearn fixture: `model.encoder.0.model.` keys and the old `pos_embed` table."""
    found = [p for p in (REPO / RSLEARN_FIXTURE, REPO.parent / RSLEARN_FIXTURE) if p.is_file()]
    if not found:
        pytest.skip(f"{RSLEARN_FIXTURE} not found")
    path = found[0]
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "model.encoder.0.model."
    assert prefix + "composite_encodings.pos_embed" in state
    theirs = OlmoEarthPretrain_v1("nano", "v1", drop_path=0.0).encoder.eval()
    theirs.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    ours, _ = convert_olmoearth(path, discard_projection=True)
    assert max_diff(ours, theirs, helios_batch(["sentinel2_l2a", "sentinel1"], 4)) <= TOL


@pytest.mark.parametrize("version", ["v1.1", "v1.2"])
def test_later_versions_are_refused(version: str) -> None:
    state = OlmoEarthPretrain_v1("nano", version).encoder.state_dict()
    with pytest.raises(ValueError, match=r"v1\.1 / v1\.2 / v1\.3 weights have parts FlexiEncoder"):
        convert_olmoearth(state, discard_projection=True)


def nano_state() -> dict[str, Tensor]:
    return dict(olmoearth_encoder().state_dict())


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ("extra", r"no FlexiEncoder counterpart: blocks\.0\.attn\.extra\.weight"),
        ("missing", r"no 'blocks\.2\.mlp\.fc2\.bias' \(needed for blocks\.2\.mlp\.fc2\.bias\)"),
        ("month", r"month_embed\.weight is not OlmoEarth's fixed table"),
        ("shape", r"blocks\.1\.mlp\.fc1\.weight: OlmoEarth weights give shape \(256, 128\)"),
        ("head", r"project_and_aggregate\.projection\.0\.weight.*discard_projection=True"),
    ],
)
def test_bad_state_dicts_fail_naming_the_key(edit: str, match: str) -> None:
    state = nano_state()
    if edit == "extra":
        state["blocks.0.attn.extra.weight"] = torch.zeros(3)
    elif edit == "missing":
        del state["blocks.2.mlp.fc2.bias"]
    elif edit == "month":
        state["composite_encodings.month_embed.weight"] = torch.randn(12, 32)
    elif edit == "shape":
        state["blocks.1.mlp.fc1.weight"] = torch.zeros(256, 128)
    with pytest.raises(ValueError, match=match):
        convert_olmoearth(state, discard_projection=edit != "head")


def test_weights_files_load_weights_only(tmp_path: Path) -> None:
    torch.save({"state_dict": nano_state(), "hook": logging.Logger}, tmp_path / "unsafe.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="unsafe.ckpt: not a safe checkpoint"):
        convert_olmoearth(tmp_path / "unsafe.ckpt", discard_projection=True)


def test_a_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"width 128 and depth 4 \(nano\), not tiny"):
        convert_olmoearth(nano_state(), size="tiny", discard_projection=True)


def test_modalities_without_a_helios_counterpart_must_be_left_out() -> None:
    torch.manual_seed(0)
    names = ["sentinel2_l2a", "naip"]
    state = OlmoEarthPretrain_v1("nano", "v1", supported_modality_names=names).encoder.state_dict()
    with pytest.raises(ValueError, match=r"\['naip'\] have no Helios counterpart"):
        convert_olmoearth(state, discard_projection=True)
    ours, _ = convert_olmoearth(state, modalities=["sentinel2_l2a"], discard_projection=True)
    assert ours.modalities == ("sentinel2_l2a",)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_exported_encoder_loads_and_trains_one_step(tmp_path: Path, caplog) -> None:
    theirs = olmoearth_encoder()
    path = export_olmoearth(theirs.state_dict(), tmp_path / "encoder.pt", discard_projection=True)
    exported = load_encoder(path)
    assert exported.normalizer.method is NormMethod.NORM_NO_CLIP_2_STD
    assert exported.config.position == "helios.nn.encodings.OlmoEarthEncodings"
    batch = helios_batch(SATELLITES, 4)
    assert max_diff(exported.encoder, theirs, batch) <= TOL

    mods = ["sentinel2_l2a", "sentinel1"]
    with caplog.at_level(logging.WARNING):
        model = LatentMIM(mods, encoder=EncoderConfig(), init_from=str(path), target="ema")
    assert "not using the weights of modalities" in caplog.text
    assert model.encoder_config == exported.config
    start = exported.encoder.state_dict()
    for network in (model.encoder, model.get_submodule("target_encoder")):
        assert all(torch.equal(v, start[k]) for k, v in network.state_dict().items())

    batches = [make_batch(mods, patch_size=4, ref_size=16, timesteps=3, seed=5, num_views=2)]
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 1
    trained = model.encoder.state_dict()
    assert all(torch.isfinite(v).all() for v in trained.values())
    assert not torch.equal(trained["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
