"""OlmoEarth v1 weights as a Helios `FlexiEncoder`: the adapter for OlmoEarth weight bundles.

`convert_olmoearth` reads an OlmoEarth v1 encoder (a state dict, a checkpoint file, or a
released bundle folder with `config.json` and `weights.pth`) and returns a `FlexiEncoder` and
its `EncoderConfig` whose forward equals OlmoEarth's (`olmoearth-pretrain-minimal` 0.1.5) to
float32 rounding. `export_olmoearth` writes it as an exported `encoder.pt`, which `helios fit`
starts from with `--model.init_args.init_from` (docs/training.md, "Starting from OlmoEarth").

The weights map one to one: q, k and v are fused into `qkv`; each band set's Conv2d kernel
[D, C, P, P] becomes a [D, P, P, C] kernel (Helios flattens a patch as row, column, channel);
the band sets' biases are stacked; the band-set embeddings are copied. Modality names are
OlmoEarth's except `wri_canopy_height_map` (Helios `wri_canopy_height`); the band orders and
band-set splits of the nine v1 modalities equal Helios's registry (checked by the tests).
OlmoEarth's fixed month table (and the legacy `pos_embed` time table of older checkpoints)
is checked against what Helios computes and otherwise refused.

Where OlmoEarth computes differently the converted encoder uses OlmoEarth-compatible parts:
`OlmoEarthEncodings` (its time-index, month and space codes) and `InputResizeEmbedding` (at
patch sizes below P it resizes the image, bicubic and antialiased, instead of the kernel).

Refused, with a message that names the part: weights of OlmoEarth v1.1 / v1.2 / v1.3 (one
band group per modality, a per-pixel MLP patch embedding, 3-D RoPE, the attention pooler),
register tokens, any key the mapping does not use or needs but does not find, a size other
than the one asked for, and the contrastive projection head `project_and_aggregate` unless
``discard_projection=True`` (it has no FlexiEncoder counterpart and does not change tokens).

Missing tokens: Helios never encodes MISSING (or any non-ENCODER) token, which is OlmoEarth's
training-mode forward. OlmoEarth's eval forward encodes every token when nothing is missing
(`fast_pass`), which Helios matches; with missing tokens in eval mode OlmoEarth either
encodes them too (`fast_pass=True`) or attends zero-padding rows, so its outputs depend on
the batch; Helios' do not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from helios.checkpoint import load_checkpoint
from helios.data.modalities import MODALITIES, get_modality
from helios.data.normalize import Normalizer, NormMethod
from helios.data.stats import NormStats
from helios.nn.attention import class_path
from helios.nn.encoder import FlexiEncoder
from helios.nn.encodings import OlmoEarthEncodings, olmoearth_month_encoding, olmoearth_sincos
from helios.nn.export import EncoderConfig, export_encoder
from helios.nn.patch_embed import InputResizeEmbedding

logger = logging.getLogger(__name__)

OlmoEarthSize = Literal["nano", "tiny", "base", "large"]
"""The OlmoEarth v1 model sizes."""

SIZES: dict[str, tuple[int, int, int]] = {
    "nano": (128, 4, 8),
    "tiny": (192, 12, 3),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
"""OlmoEarth v1 encoder sizes: (width, depth, heads)."""

HELIOS_NAMES = {"wri_canopy_height_map": "wri_canopy_height"}
"""OlmoEarth modality names that Helios spells differently (all others are the same)."""

PATCH = "patch_embeddings.per_modality_embeddings."
CHANNEL = "composite_encodings.per_modality_channel_embeddings."
MONTH_TABLE = "composite_encodings.month_embed.weight"
LEGACY_TIME_TABLE = "composite_encodings.pos_embed"
PROJECTION = "project_and_aggregate."

_LATER_VERSIONS = {
    "pixel_proj": "a per-pixel MLP patch embedding (v1.1+)",
    "post_proj": "an MLP after the patch projection",
    "rope_mixed_freqs": "3-D RoPE-Mixed attention (v1.2+)",
    "attention_pooler": "an attention pooler (v1.3)",
}
_NO_COUNTERPART = {"register_tokens": "register tokens"}
_CONFIG_CHECKS: dict[str, tuple[Any, str]] = {
    "tokenization_config": (None, "custom band groups (v1.1+: one group per modality)"),
    "use_linear_patch_embed": (False, "a linear patch projection (v1.1+)"),
    "patch_embed_hidden_sizes": (None, "a per-pixel MLP patch embedding (v1.1+)"),
    "post_proj_hidden_sizes": (None, "an MLP after the patch projection"),
    "position_encoding": ("absolute", "RoPE positions (v1.2+)"),
    "attention_pooler_config": (None, "an attention pooler (v1.3)"),
    "num_register_tokens": (0, "register tokens"),
}


@dataclass(frozen=True)
class _Layout:
    """The encoder size the weights (and a bundle's config) describe."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    max_patch_size: int
    qk_norm: bool


@dataclass
class _Reader:
    """Takes tensors out of an OlmoEarth state dict, remembering which keys were used."""

    state: Mapping[str, Tensor]
    used: set[str] = field(default_factory=set)

    def take(self, key: str, purpose: str) -> Tensor:
        """The tensor at `key`; a missing key fails naming it and what it was needed for."""
        if key not in self.state:
            raise ValueError(f"OlmoEarth state dict has no {key!r} (needed for {purpose})")
        self.used.add(key)
        return self.state[key]


def _load_weights(path: Path) -> dict[str, Tensor]:
    """A state dict from a weights file or a (Lightning) checkpoint's `state_dict`."""
    payload: Any = load_checkpoint(path)  # torch.load(..., weights_only=True)
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    return dict(payload)


def _encoder_prefix(keys: Sequence[str]) -> str:
    """The prefix of the online encoder's keys, e.g. `encoder.` in a bundle's weights.pth."""
    found = sorted({k[: k.index(PATCH)] for k in keys if PATCH in k})
    candidates = [p for p in found if not p.endswith("target_encoder.")]
    if len(candidates) != 1:
        raise ValueError(
            f"cannot tell the OlmoEarth encoder's keys apart (prefixes before {PATCH!r}: "
            f"{found or 'none'}); pass prefix=..."
        )
    return candidates[0]


def read_olmoearth(
    source: Mapping[str, Tensor] | str | Path, prefix: str | None = None
) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """The encoder's tensors (keys without `prefix`) and a bundle's `encoder_config`, if any.

    Args:
        source: a state dict; a weights file or Lightning checkpoint (rslearn's); or a bundle
            folder holding `config.json` and `weights.pth`.
        prefix: what precedes the encoder's keys (``""``, ``"encoder."``, ``"model.encoder."``,
            ``"model.encoder.0.model."``); found by itself when omitted.

    """
    config = None
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if path.is_dir():
            config_path = path / "config.json"
            if not config_path.is_file():
                raise FileNotFoundError(f"{path}: an OlmoEarth bundle holds config.json")
            model = json.loads(config_path.read_text()).get("model", {})
            config = model.get("encoder_config")
            if not isinstance(config, dict):
                raise ValueError(f"{config_path}: no model.encoder_config")
            path = path / "weights.pth"
        state = _load_weights(path)
    prefix = _encoder_prefix(list(state)) if prefix is None else prefix
    encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    rest = sorted({k.split(".")[0] for k in state if not k.startswith(prefix)})
    if rest:
        logger.info("OlmoEarth weights: reading the encoder %r, not %s", prefix, rest)
    return encoder, config


def _refuse_unconvertible(state: Mapping[str, Tensor], config: Mapping[str, Any] | None) -> None:
    """Fail for OlmoEarth v1.1+ weights and other parts FlexiEncoder has no counterpart for."""
    reasons: dict[str, str] = {}
    for key in state:
        for part in key.split("."):
            if part in _LATER_VERSIONS or part in _NO_COUNTERPART:
                why = _LATER_VERSIONS.get(part) or _NO_COUNTERPART[part]
                reasons.setdefault(why, key)
    for name, (default, why) in _CONFIG_CHECKS.items():
        if config is not None and config.get(name, default) not in (default, None, [], 0):
            reasons.setdefault(why, f"config {name}={config[name]!r}")
    s2 = state.get(CHANNEL + "sentinel2_l2a")
    if s2 is not None and s2.shape[0] != get_modality("sentinel2_l2a").num_band_sets:
        reasons.setdefault("one band group per modality (v1.1+)", CHANNEL + "sentinel2_l2a")
    if not reasons:
        return
    found = "; ".join(f"{why} ({where})" for why, where in reasons.items())
    what = "these OlmoEarth weights have parts"
    if any("v1." in why for why in reasons):
        what = "OlmoEarth v1.1 / v1.2 / v1.3 weights have parts"
    raise ValueError(
        f"{what} FlexiEncoder has no counterpart for: {found}. FlexiEncoder embeds every band "
        "set with its own kernel and adds sin-cos positions; only OlmoEarth v1 (Nano, Tiny, "
        "Base, Large) converts."
    )


def _layout(
    state: Mapping[str, Tensor],
    config: Mapping[str, Any] | None,
    size: OlmoEarthSize | None,
    num_heads: int | None,
) -> _Layout:
    """Width, depth, heads, MLP ratio and kernel size from the weights, checked against `size`."""
    if "norm.weight" not in state:
        raise ValueError("no 'norm.weight': not an OlmoEarth encoder state dict (see prefix=)")
    dim = int(state["norm.weight"].shape[0])
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    named = next((n for n, (w, d, _) in SIZES.items() if (w, d) == (dim, depth)), None)
    if size is not None and size != named:
        w, d, _ = SIZES[size]
        raise ValueError(
            f"the weights are an OlmoEarth encoder of width {dim} and depth {depth} "
            f"({named or 'no v1 size'}), not {size} (width {w}, depth {d})"
        )
    if config is not None and (config.get("embedding_size"), config.get("depth")) != (dim, depth):
        raise ValueError(
            f"config.json says width {config.get('embedding_size')} and depth "
            f"{config.get('depth')}, the weights have width {dim} and depth {depth}"
        )
    heads = num_heads or (config or {}).get("num_heads") or (SIZES[named][2] if named else None)
    if heads is None:
        raise ValueError(
            f"width {dim} and depth {depth} is no OlmoEarth v1 size ({SIZES}); pass num_heads"
        )
    kernels = [v for k, v in state.items() if k.startswith(PATCH) and k.endswith(".proj.weight")]
    if not kernels or kernels[0].ndim != 4:
        raise ValueError("OlmoEarth v1 weights hold Conv2d patch kernels [D, C, P, P]; none found")
    hidden = int(_Reader(state).take("blocks.0.mlp.fc1.weight", "the MLP width").shape[0])
    return _Layout(
        embed_dim=dim,
        depth=depth,
        num_heads=int(heads),
        mlp_ratio=hidden / dim,
        max_patch_size=int(kernels[0].shape[-1]),
        qk_norm="blocks.0.attn.q_norm.weight" in state,
    )


def _modalities(state: Mapping[str, Tensor], chosen: Sequence[str] | None) -> dict[str, str]:
    """Helios name -> OlmoEarth name of each modality to convert (default: all in the weights)."""
    names = [_modality_of(k) for k in state if k.startswith((PATCH, CHANNEL))]
    pairs = {HELIOS_NAMES.get(n, n): n for n in dict.fromkeys(names)}
    if chosen is None:
        unknown = [oe for he, oe in pairs.items() if he not in MODALITIES]
        if unknown:
            raise ValueError(
                f"OlmoEarth modalities {unknown} have no Helios counterpart; pass "
                f"modalities= without them (in the weights: {list(pairs)})"
            )
        return pairs
    absent = [m for m in chosen if m not in pairs]
    if absent:
        raise ValueError(f"modalities {absent} are not in the weights (they hold {list(pairs)})")
    left = [oe for he, oe in pairs.items() if he not in chosen]
    if left:
        logger.info("OlmoEarth weights: leaving out modalities %s (not in modalities=)", left)
    return {m: pairs[m] for m in chosen}


def _blocks(reader: _Reader, layout: _Layout) -> dict[str, Tensor]:
    """Transformer blocks and the final norm, q/k/v fused into qkv."""
    out: dict[str, Tensor] = {}
    names = ["norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2"]
    names += ["attn.q_norm", "attn.k_norm"] if layout.qk_norm else []
    for i in range(layout.depth):
        b = f"blocks.{i}."
        for part in ("weight", "bias"):
            qkv = [reader.take(f"{b}attn.{n}.{part}", f"{b}attn.qkv.{part}") for n in "qkv"]
            out[f"{b}attn.qkv.{part}"] = torch.cat(qkv)
            for name in names:
                out[f"{b}{name}.{part}"] = reader.take(f"{b}{name}.{part}", f"{b}{name}.{part}")
    for part in ("weight", "bias"):
        out[f"norm.{part}"] = reader.take(f"norm.{part}", f"norm.{part}")
    return out


def _embeddings(reader: _Reader, pairs: Mapping[str, str]) -> dict[str, Tensor]:
    """Patch kernels [D, P, P, C] and stacked biases per band set, band-set embeddings."""
    out: dict[str, Tensor] = {}
    for helios, oe in pairs.items():
        biases = []
        for s in range(get_modality(helios).num_band_sets):
            key = f"{PATCH}{oe}.{oe}__{s}.proj."
            target = f"token_embedding.embeds.{helios}.weights.{s}"
            out[target] = reader.take(key + "weight", target).permute(0, 2, 3, 1).contiguous()
            biases.append(reader.take(key + "bias", f"token_embedding.embeds.{helios}.bias"))
        out[f"token_embedding.embeds.{helios}.bias"] = torch.stack(biases)
        channel = f"encodings.channel.{helios}"
        out[channel] = reader.take(CHANNEL + oe, channel)
    return out


def _check_fixed_tables(reader: _Reader, quarter: int) -> None:
    """OlmoEarth's frozen month (and legacy time) tables must be the codes Helios computes."""
    expected = {MONTH_TABLE: olmoearth_month_encoding(torch.arange(1, 13), quarter)}
    if LEGACY_TIME_TABLE in reader.state:
        rows = reader.state[LEGACY_TIME_TABLE].shape[0]
        expected[LEGACY_TIME_TABLE] = olmoearth_sincos(torch.arange(rows), quarter)
    for key, table in expected.items():
        got = reader.take(key, "a check against the computed codes").float()
        if got.shape != table.shape:
            raise ValueError(f"{key} has shape {tuple(got.shape)}, not {tuple(table.shape)}")
        if not torch.allclose(got, table, atol=1e-5, rtol=0):
            diff = f"max |diff| {float((got - table).abs().max()):.3g}"
            raise ValueError(
                f"{key} is not OlmoEarth's fixed table ({diff}); FlexiEncoder computes this "
                "code and cannot carry a trained table"
            )


def _modality_of(key: str) -> str:
    """The OlmoEarth modality of a patch-embedding or band-set-embedding key."""
    return key.removeprefix(PATCH).removeprefix(CHANNEL).split(".")[0]


def _check_rest(reader: _Reader, pairs: Mapping[str, str], discard_projection: bool) -> None:
    """Every key must have been used, or belong to a modality left out, or be a discarded head."""
    kept = set(pairs.values())
    rest = [k for k in reader.state if k not in reader.used]
    embeddings = [k for k in rest if k.startswith((PATCH, CHANNEL))]
    left_out = [k for k in embeddings if _modality_of(k) not in kept]
    head = [k for k in rest if k.startswith(PROJECTION)]
    if head and not discard_projection:
        raise ValueError(
            f"OlmoEarth's contrastive projection head ({', '.join(head)}) has no FlexiEncoder "
            "counterpart; pass discard_projection=True to leave it out (tokens do not use it)"
        )
    extra = [k for k in rest if k not in set(left_out) | set(head)]
    if extra:
        shown = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
        raise ValueError(f"OlmoEarth keys with no FlexiEncoder counterpart: {shown}")


def _load(encoder: FlexiEncoder, state: Mapping[str, Tensor]) -> None:
    """Strict load with shape errors that name the tensor."""
    own = encoder.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"{key}: OlmoEarth weights give shape {tuple(value.shape)}, the FlexiEncoder "
                f"of this size has {tuple(own[key].shape)}"
            )
    encoder.load_state_dict(state, strict=True)


def convert_olmoearth(
    source: Mapping[str, Tensor] | str | Path,
    *,
    size: OlmoEarthSize | None = None,
    num_heads: int | None = None,
    modalities: Sequence[str] | None = None,
    discard_projection: bool = False,
    prefix: str | None = None,
) -> tuple[FlexiEncoder, EncoderConfig]:
    """An OlmoEarth v1 encoder as a `FlexiEncoder` (in eval mode) and its `EncoderConfig`.

    Args:
        source: a state dict, a weights file / checkpoint, or a bundle folder (see
            `read_olmoearth`).
        size: the size the weights must have (refused otherwise); found from them if omitted.
        num_heads: attention heads, for weights of no v1 size without a bundle config.
        modalities: Helios names of the modalities to convert (default: all in the weights);
            the others are left out.
        discard_projection: leave out OlmoEarth's contrastive projection head.
        prefix: what precedes the encoder's keys (found by itself when omitted).

    Raises:
        ValueError: for weights that do not convert, naming the part (see the module doc).

    """
    state, config = read_olmoearth(source, prefix)
    _refuse_unconvertible(state, config)
    layout = _layout(state, config, size, num_heads)
    pairs = _modalities(state, modalities)
    reader = _Reader(state)
    converted = {**_blocks(reader, layout), **_embeddings(reader, pairs)}
    _check_fixed_tables(reader, layout.embed_dim // 4)
    _check_rest(reader, pairs, discard_projection)
    encoder_config = EncoderConfig(
        embed_dim=layout.embed_dim,
        depth=layout.depth,
        num_heads=layout.num_heads,
        mlp_ratio=layout.mlp_ratio,
        max_patch_size=layout.max_patch_size,
        position=class_path(OlmoEarthEncodings),
        qk_norm=layout.qk_norm,
        embedding_layer=class_path(InputResizeEmbedding),
    )
    encoder = encoder_config.build(list(pairs))
    _load(encoder, converted)
    return encoder.eval(), encoder_config


def olmoearth_normalizer(computed: Mapping[str, Any] | str | Path | None = None) -> Normalizer:
    """OlmoEarth's input normalization: ``(x - (mean - 2 std)) / (4 std)`` with its stats.

    Args:
        computed: OlmoEarth's `computed.json` (a path or its parsed payload); by default the
            one shipped in `olmoearth-pretrain-minimal`. Modalities Helios lacks are skipped;
            modalities without stats there use Helios's fixed ranges.

    """
    if computed is None:
        package = "olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.norm_configs"
        stats_json = json.loads(files(package).joinpath("computed.json").read_text())
    elif isinstance(computed, Mapping):
        stats_json = computed
    else:
        stats_json = json.loads(Path(computed).read_text())
    payload = {
        HELIOS_NAMES.get(k, k): v
        for k, v in stats_json.items()
        if not isinstance(v, Mapping) or HELIOS_NAMES.get(k, k) in MODALITIES
    }
    stats = NormStats.from_json(payload, source="OlmoEarth computed.json")
    return Normalizer(stats, NormMethod.NORM_NO_CLIP_2_STD)


def export_olmoearth(
    source: Mapping[str, Tensor] | str | Path,
    path: str | Path,
    *,
    patch_size: int = 4,
    size: OlmoEarthSize | None = None,
    modalities: Sequence[str] | None = None,
    discard_projection: bool = False,
    normalizer: Normalizer | None = None,
) -> Path:
    """Convert (`convert_olmoearth`) and write an exported `encoder.pt`; returns its path.

    Args:
        source: the OlmoEarth weights (see `read_olmoearth`).
        path: the encoder file to write.
        patch_size: the default patch size recorded for evals and the runner.
        size: the size the weights must have.
        modalities: Helios names of the modalities to convert (default: all).
        discard_projection: leave out OlmoEarth's contrastive projection head.
        normalizer: the input normalization recorded (default: `olmoearth_normalizer()`).

    """
    encoder, config = convert_olmoearth(
        source, size=size, modalities=modalities, discard_projection=discard_projection
    )
    origin = source if isinstance(source, str | Path) else "state dict"
    return export_encoder(
        path,
        encoder,
        config,
        normalizer or olmoearth_normalizer(),
        patch_size=patch_size,
        metadata={"converted_from": f"OlmoEarth v1 ({origin})"},
    )
