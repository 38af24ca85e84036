"""Probe of the upstream OlmoEarth encoder (``olmoearth-pretrain-minimal`` 0.1.5).

Builds a seeded, randomly initialised OlmoEarth v1 nano model, feeds it a tiny Sentinel-2 L2A
+ Sentinel-1 sample and prints what goes in and what comes out, then checks a few facts that a
Helios converter has to reproduce exactly (each check prints ``OK`` or ``MISMATCH``):

- the additive encodings (band set | time index | month | space quarters) follow the formulas
  written out in ``additive_encodings`` below;
- at ``patch_size < max_patch_size`` the patch embedding resizes the *input image* (bicubic,
  antialias) up to the base kernel, it does not resize the kernel;
- in eval mode without ``fast_pass`` masked tokens are dropped but the remaining rows are padded
  with zero vectors that are *not* masked out of attention, so a sample's output depends on the
  other samples in the batch;
- a state dict with the legacy ``composite_encodings.pos_embed`` key loads strictly.

It never imports Helios. Run it in the scratch environment that has the upstream package::

    python3 -m venv .peer/oe-minimal
    .peer/oe-minimal/bin/pip install torch==2.14.1 olmoearth-pretrain-minimal==0.1.5
    .peer/oe-minimal/bin/python tests/peer/olmoearth_probe.py
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import (
    Encoder,
    PoolingType,
    TokensAndMasks,
)
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
    MaskedOlmoEarthSample,
    MaskValue,
)

SEED = 0
BATCH, SIZE, STEPS, PATCH = 2, 16, 3, 4


def check(name: str, a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    """Print whether two tensors agree to `tol` (max abs difference)."""
    diff = float((a - b).abs().max())
    print(f"  [{'OK' if diff <= tol else 'MISMATCH'}] {name}: max |diff| = {diff:.3g}")


def make_sample(generator: torch.Generator) -> MaskedOlmoEarthSample:
    """A normalized-looking S2 L2A + S1 sample: data [B, H, W, T, C], masks [B, H, W, T, S]."""
    s2 = Modality.SENTINEL2_L2A
    s1 = Modality.SENTINEL1
    # timestamps [B, T, 3] = (day 1..31, month 0..11, year); month indexes month_embed
    timestamps = torch.tensor([[[15, 5, 2023], [14, 6, 2023], [13, 7, 2023]]] * BATCH)
    return MaskedOlmoEarthSample(
        timestamps=timestamps,
        sentinel2_l2a=torch.rand(BATCH, SIZE, SIZE, STEPS, s2.num_bands, generator=generator),
        sentinel2_l2a_mask=torch.zeros(BATCH, SIZE, SIZE, STEPS, s2.num_band_sets),
        sentinel1=torch.rand(BATCH, SIZE, SIZE, STEPS, s1.num_bands, generator=generator),
        sentinel1_mask=torch.zeros(BATCH, SIZE, SIZE, STEPS, s1.num_band_sets),
    )


def describe(out: dict[str, object]) -> None:
    """Print the structure of an encoder output dict."""
    for key, val in out.items():
        if isinstance(val, TokensAndMasks):
            print(f"  {key}: TokensAndMasks")
            for field in val._fields:
                t = getattr(val, field)
                if t is not None:
                    print(f"    .{field}: {tuple(t.shape)} {t.dtype}")
        elif isinstance(val, torch.Tensor):
            print(f"  {key}: {tuple(val.shape)} {val.dtype}")
        else:
            print(f"  {key}: {type(val).__name__}")


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Upstream 1D sin-cos: omega_k = 10000^(-k / (2 dim)), k < dim / 2; [sin | cos]."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2) / (2.0 * dim))
    angles = pos.reshape(-1, 1).float() * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def additive_encodings(
    enc: Encoder, name: str, tokens: torch.Tensor, ts: torch.Tensor
) -> torch.Tensor:
    """Re-derive what CompositeEncodings adds to tokens [B, h, w, T, S, D] (input_res 10 m)."""
    b, h, w, t, s, d = tokens.shape
    n = d // 4
    out = torch.zeros_like(tokens)
    out[..., :n] += enc.composite_encodings.per_modality_channel_embeddings[name]  # [S, n]
    out[..., n : 2 * n] += sincos_1d(torch.arange(t), n)[None, None, None, :, None]
    month = 2 * math.pi * ts[:, :, 1].float() / 12  # 0-based months
    month_code = torch.cat(
        [month[..., None].sin().expand(b, t, n // 2), month[..., None].cos().expand(b, t, n // 2)],
        dim=-1,
    )
    out[..., 2 * n : 3 * n] += month_code[:, None, None, :, None]
    gsd_ratio = 10 * PATCH / 10  # input_res * patch_size / BASE_GSD
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    space = torch.cat([sincos_1d(cols * gsd_ratio, n // 2), sincos_1d(rows * gsd_ratio, n // 2)], 1)
    out[..., 3 * n :] += space.view(h, w, n)[None, :, :, None, None]
    return out


def main() -> None:
    """Build the model, print the output structure and run the checks."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(SEED)
    model = OlmoEarthPretrain_v1(model_size="nano", model_version="v1")
    enc: Encoder = model.model.encoder
    enc.eval()
    gen = torch.Generator().manual_seed(SEED)
    sample = make_sample(gen)

    print("== model: OlmoEarthPretrain_v1(model_size='nano', model_version='v1'), seed", SEED)
    heads = enc.blocks[0].attn.num_heads
    print(
        f"  embedding {enc.embedding_size}, depth {len(enc.blocks)}, heads {heads}, "
        f"max_patch_size {enc.max_patch_size}, position {enc.position_encoding}, "
        f"linear_patch_embed {enc.use_linear_patch_embed}"
    )
    params = sum(p.numel() for p in enc.parameters())
    print(f"  encoder tensors {len(enc.state_dict())}, params {params}")
    print("== input")
    for key, val in sample.as_dict(return_none=False).items():
        print(f"  {key}: {tuple(val.shape)} {val.dtype}")

    with torch.no_grad():
        out = enc(sample, patch_size=PATCH, input_res=10, fast_pass=True)
        out_slow = enc(sample, patch_size=PATCH, input_res=10, fast_pass=False)
    print(f"== output of encoder(sample, patch_size={PATCH}, input_res=10, fast_pass=True)")
    describe(out)
    tam: TokensAndMasks = out["tokens_and_masks"]
    spatial = tam.pool_unmasked_tokens(PoolingType.MEAN, spatial_pooling=True)
    pooled = tam.pool_unmasked_tokens(PoolingType.MEAN, spatial_pooling=False)
    print(f"  pool_unmasked_tokens(MEAN, spatial_pooling=True): {tuple(spatial.shape)}")
    print(f"  pool_unmasked_tokens(MEAN, spatial_pooling=False): {tuple(pooled.shape)}")
    print("  s2 tokens[0, 0, 0, 0, :, :4] =", tam.sentinel2_l2a[0, 0, 0, 0, :, :4].tolist())

    print("== checks")
    tam_slow: TokensAndMasks = out_slow["tokens_and_masks"]
    check(
        "fast_pass == full pass when nothing is masked", tam.sentinel2_l2a, tam_slow.sentinel2_l2a
    )

    with torch.no_grad():
        patch = enc.patch_embeddings(sample, PATCH)
        encoded = enc.composite_encodings(
            {k: v for k, v in patch.items() if not k.endswith("_mask")},
            sample.timestamps,
            PATCH,
            10,
        )
    for name in ("sentinel2_l2a", "sentinel1"):
        want = additive_encodings(enc, name, patch[name], sample.timestamps)
        check(f"{name} additive encodings formula", encoded[name] - patch[name], want)

    # patch embedding at p < P: bicubic-antialias upsampling of the input, then the base conv
    s2 = sample.sentinel2_l2a
    x = s2[..., :4].permute(0, 3, 4, 1, 2).reshape(BATCH * STEPS, 4, SIZE, SIZE)
    scale = enc.max_patch_size // PATCH
    up = F.interpolate(x, size=(SIZE * scale, SIZE * scale), mode="bicubic", antialias=True)
    conv = enc.patch_embeddings.per_modality_embeddings["sentinel2_l2a"]["sentinel2_l2a__0"].proj
    with torch.no_grad():
        mine = conv(up).view(BATCH, STEPS, -1, SIZE // PATCH, SIZE // PATCH)
    check(
        "patch embed = conv(bicubic_aa_upsample(x)) for band set 0",
        mine.permute(0, 3, 4, 1, 2),
        patch["sentinel2_l2a"][..., 0, :],
    )
    up_plain = F.interpolate(x, size=(SIZE * scale, SIZE * scale), mode="bicubic")
    with torch.no_grad():
        plain = conv(up_plain).view(BATCH, STEPS, -1, SIZE // PATCH, SIZE // PATCH)
    diff = float((plain.permute(0, 3, 4, 1, 2) - patch["sentinel2_l2a"][..., 0, :]).abs().max())
    print(f"  (bicubic without antialias differs by {diff:.3g}: the antialias kernel matters)")

    # eval mode, fast_pass=False: zero-padded rows attend without a mask
    masked = sample.sentinel2_l2a_mask.clone()
    masked[1, :, :, 2] = MaskValue.MISSING.value  # sample 1 lacks its last S2 timestep
    s1_mask = sample.sentinel1_mask.clone()
    s1_mask[1, :, :, 2] = MaskValue.MISSING.value
    partial = sample._replace(sentinel2_l2a_mask=masked, sentinel1_mask=s1_mask)
    alone = MaskedOlmoEarthSample(
        **{k: (v[1:] if v is not None else None) for k, v in partial.as_dict().items()}
    )
    with torch.no_grad():
        both = enc(partial, patch_size=PATCH, fast_pass=False)["tokens_and_masks"]
        solo = enc(alone, patch_size=PATCH, fast_pass=False)["tokens_and_masks"]
    diff = float((both.sentinel2_l2a[1, :, :, :2] - solo.sentinel2_l2a[0, :, :, :2]).abs().max())
    print(
        f"  eval, fast_pass=False: sample 1 in a batch with a full sample vs alone differs by "
        f"{diff:.3g} (padding rows are attended: no attn_mask outside training)"
    )
    print(
        "  masked-out tokens come back as zeros:", bool((both.sentinel2_l2a[1, :, :, 2] == 0).all())
    )

    state = dict(enc.state_dict())
    state["composite_encodings.pos_embed"] = torch.zeros(12, enc.embedding_size // 4)
    result = enc.load_state_dict(state, strict=True)
    print("  strict load with legacy composite_encodings.pos_embed:", result)


if __name__ == "__main__":
    main()
