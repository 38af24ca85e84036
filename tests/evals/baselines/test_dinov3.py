"""DINOv3: published key layouts, equality with timm's independent implementation, inputs."""

from __future__ import annotations

import pytest
import torch

from helios.data.normalize import NormMethod, NormStats
from helios.data.sample import MaskValue
from helios.evals.baselines.dinov3 import (
    SAT_MEAN_STD,
    VARIANTS,
    WEB_MEAN_STD,
    DINOv3Arch,
    DINOv3Encoder,
    DINOv3Net,
)

from .conftest import TINY_DINOV3, make_batch


def published_layout(dim: int, depth: int, local_cls_norm: bool) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the published checkpoints, from dinov3/models/vision_transformer.py.

    hub/backbones.py builds every ViT/16 with 4 storage tokens, LayerScale, qkv bias with
    `mask_k_bias` (a persistent `qkv.bias_mask` buffer), an MLP FFN, RoPE (a persistent
    `rope_embed.periods` buffer of head_dim / 4), and for the SAT-493M ViT-L an untied
    `local_cls_norm`. Heads are 64 wide.
    """
    keys: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "storage_tokens": (1, 4, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, 16, 16),
        "patch_embed.proj.bias": (dim,),
        "rope_embed.periods": (16,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update(
            {
                b + "norm1.weight": (dim,),
                b + "norm1.bias": (dim,),
                b + "attn.qkv.weight": (3 * dim, dim),
                b + "attn.qkv.bias": (3 * dim,),
                b + "attn.qkv.bias_mask": (3 * dim,),
                b + "attn.proj.weight": (dim, dim),
                b + "attn.proj.bias": (dim,),
                b + "ls1.gamma": (dim,),
                b + "norm2.weight": (dim,),
                b + "norm2.bias": (dim,),
                b + "mlp.fc1.weight": (4 * dim, dim),
                b + "mlp.fc1.bias": (4 * dim,),
                b + "mlp.fc2.weight": (dim, 4 * dim),
                b + "mlp.fc2.bias": (dim,),
                b + "ls2.gamma": (dim,),
            }
        )
    keys.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    if local_cls_norm:
        keys.update({"local_cls_norm.weight": (dim,), "local_cls_norm.bias": (dim,)})
    return keys


@pytest.mark.parametrize(
    ("variant", "dim", "depth", "local"),
    [
        ("vits16_web", 384, 12, False),
        ("vitb16_web", 768, 12, False),
        ("vitl16_sat", 1024, 24, True),
    ],
)
def test_published_key_layouts(variant: str, dim: int, depth: int, local: bool) -> None:
    with torch.device("meta"):
        net = DINOv3Net(VARIANTS[variant][0])
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = published_layout(dim, depth, local)
    assert list(ours) == list(expected)
    assert ours == expected


def test_buffers_hold_the_published_values() -> None:
    net = DINOv3Net(DINOv3Arch(depth=1))
    periods = 100.0 ** (2 * torch.arange(16) / 32)
    assert torch.allclose(net.rope_embed.periods, periods)
    mask = net.blocks[0].attn.qkv.bias_mask
    assert mask[:384].eq(1).all() and mask[384:768].eq(0).all() and mask[768:].eq(1).all()


def test_matches_timm(tiny_dinov3: DINOv3Encoder) -> None:
    """timm's Eva DINOv3 loads our state dict through its own converter and agrees exactly."""
    timm = pytest.importorskip("timm")
    from timm.models.eva import checkpoint_filter_fn

    torch.manual_seed(0)
    net = DINOv3Net(DINOv3Arch(depth=3)).eval()
    with torch.no_grad():
        for blk in net.blocks:
            blk.attn.qkv.bias.normal_()  # the k part must be dropped by both
    ref = timm.create_model(
        "vit_small_patch16_dinov3_qkvb", pretrained=False, num_classes=0, depth=3
    )
    ref.load_state_dict(checkpoint_filter_fn(net.state_dict(), ref), strict=True)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours = net.encode(x).flatten(1, 2)
        theirs = ref.eval().forward_features(x)[:, 5:]
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_normalization_is_min_max_then_the_variant_mean_std() -> None:
    stats = NormStats.from_vectors(
        "sentinel2_l2a", mean=[0.0] * 12, std=[1.0] * 12, min=[0.0] * 12, max=[2550.0] * 12
    )
    seen: list[torch.Tensor] = []
    for variant, (mean, std) in (("vits16_web", WEB_MEAN_STD), ("vitl16_sat", SAT_MEAN_STD)):
        enc = DINOv3Encoder(variant=variant, stats=stats, arch=TINY_DINOV3)  # type: ignore[arg-type]
        assert enc.normalizer.method is NormMethod.NORM_YES_CLIP_MIN_MAX_INT
        raw = torch.full((1, 16, 16, 1, 12), 1000.0)
        raw[..., 2] = 3000.0  # B04 clips to 1
        x = enc.normalizer("sentinel2_l2a", raw)
        assert x[0, 0, 0, 0, 0] == pytest.approx(100 / 255) and x[0, 0, 0, 0, 2] == 1.0
        batch = make_batch(("sentinel2_l2a",), batch_size=1, size=16, steps=1, patch_size=16)
        batch.data["sentinel2_l2a"] = x
        hook = enc.patch_embed.register_forward_hook(lambda m, i, o: seen.append(i[0]))
        with torch.no_grad():
            enc(batch)
        hook.remove()
        rgb = torch.tensor([1.0, 100 / 255, 100 / 255])  # B04, B03, B02 after min/max
        expected = (rgb - torch.tensor(mean)) / torch.tensor(std)
        assert torch.allclose(seen[-1][0, :, 3, 5], expected, atol=1e-5)


def test_each_rgb_modality_is_encoded_separately(tiny_dinov3: DINOv3Encoder) -> None:
    batch = make_batch(("sentinel2", "landsat"), size=16, steps=3, patch_size=2)
    with torch.no_grad():
        out = tiny_dinov3(batch)
    assert set(out.tokens) == {"dinov3_sentinel2", "dinov3_landsat"}
    assert out.tokens["dinov3_landsat"].shape == (2, 8, 8, 3, 1, TINY_DINOV3.embed_dim)
    batch.masks[0]["landsat"][..., 1] = MaskValue.MISSING  # landsat RGB lives in the 30 m set
    with torch.no_grad():
        out = tiny_dinov3(batch)
    assert (out.masks["dinov3_landsat"] == MaskValue.MISSING).all()
    assert (out.masks["dinov3_sentinel2"] == MaskValue.ENCODER).all()


def test_round_trip_through_a_local_file(tiny_dinov3: DINOv3Encoder, tmp_path) -> None:
    path = tmp_path / "dinov3.pth"
    torch.save(tiny_dinov3.state_dict(), path)
    loaded = DINOv3Encoder(path, "vits16_web", tiny_dinov3.normalizer.stats, TINY_DINOV3)
    batch = make_batch(("sentinel2_l2a",), size=16, steps=1)
    with torch.no_grad():
        assert torch.equal(
            tiny_dinov3(batch).tokens["dinov3_sentinel2_l2a"],
            loaded(batch).tokens["dinov3_sentinel2_l2a"],
        )
    with pytest.raises(ValueError, match="shape"):
        DINOv3Encoder.from_pretrained(path, "vits16_web")
