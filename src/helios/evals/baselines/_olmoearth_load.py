"""OlmoEarth weights from local files, loaded strictly (docs/baselines.md, "OlmoEarth").

The model is the authors' own implementation, `olmoearth-pretrain-minimal`; this module only
finds, checks and loads its weights. Three local sources are read:

- a release bundle: a folder with `config.json` (`{"model": LatentMIMConfig, ...}`) and
  `weights.pth` (the whole LatentMIM state dict, `encoder.*` / `decoder.*` / `target_encoder.*`);
- an olmo-core training checkpoint: a folder with `config.json` and the distributed checkpoint
  `model_and_optim/` (keys `model.encoder.*`), read with `torch.distributed.checkpoint`;
- a Hugging Face model id (`OlmoEarth-v1-Nano`, `allenai/OlmoEarth-v1-Nano` or
  `OLMOEARTH_V1_NANO`), found in the local Hugging Face cache only: Helios never downloads,
  and an id that is not cached raises a FileNotFoundError saying which files to put where.

Only the encoder is built (`EncoderConfig.build()`), never the decoder or target encoder.
Every key is checked: a missing, unexpected or mis-shaped encoder key raises naming it, a state
dict whose keys sit under another prefix (rslearn's `model.encoder.0.model.`) is refused, and
so is a config whose size disagrees with the weights or with the size asked for.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from olmoearth_pretrain_minimal import ModelID
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1 import olmoearth_pretrain_v1 as presets
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import (
    Encoder as OlmoEarthNet,
)
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import EncoderConfig
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.tokenization import (
    ModalityTokenization,
    TokenizationConfig,
)
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.config import Config
from torch import Tensor

from helios.evals.baselines._common import load_strict, load_weights

OlmoEarthSize = Literal["nano", "tiny", "small", "base", "large"]
OlmoEarthVersion = Literal["v1", "v1.1", "v1.2", "v1.3"]
PresetVersion = Literal["v1", "v1.1", "v1.2"]
"""Versions Helios can build from (size, version) alone; v1.3 needs its bundle's config."""
PRESET_SIZES: dict[str, tuple[str, ...]] = {
    "v1": presets.V1_SUPPORTED_SIZES,
    "v1.1": presets.V1_1_SUPPORTED_SIZES,
    "v1.2": presets.V1_2_SUPPORTED_SIZES,
}
"""The sizes published for each version (the package's tables)."""
ENCODER_INPUTS = ("sentinel2_l2a", "sentinel1", "landsat")
"""What the released encoders were trained to encode (the other modalities were decode-only)."""
LEGACY_KEYS = ("composite_encodings.pos_embed",)
"""Encoder keys of old checkpoints that the current model computes instead (dropped)."""
OTHER_PARTS = (
    "decoder.",
    "target_encoder.",
    "supervision_head.",
    "location_token_distillation_head.",
)
"""Parts of a LatentMIM state dict besides the encoder (not loaded)."""
CONFIG_JSON, WEIGHTS_PTH, CHECKPOINT_DIR = "config.json", "weights.pth", "model_and_optim"


@dataclass
class LoadedOlmoEarth:
    """An OlmoEarth encoder with what describes it."""

    net: OlmoEarthNet
    encoder_config: dict[str, Any]
    """The encoder's config (JSON-safe, `_CLASS_` names): rebuilds the architecture."""
    size: str | None
    """nano ... large, or None for a non-standard width/depth."""
    version: str
    inputs: tuple[str, ...]
    """The modalities the encoder was trained to encode."""
    source: str
    """Where the weights came from ("random init" for fresh weights)."""


def preset_config(
    size: OlmoEarthSize,
    version: PresetVersion,
    modalities: list[str] | None = None,
    max_patch_size: int = 8,
) -> dict[str, Any]:
    """The encoder config of a published (size, version), as `OlmoEarthPretrain_v1` builds it.

    Built from the package's own tables; tests check it equals the package's for every size.
    """
    if size not in PRESET_SIZES.get(version, ()):
        raise ValueError(
            f"OlmoEarth {version} has no {size!r} model; sizes: {list(PRESET_SIZES[version])}"
        )
    cfg = presets.MODEL_SIZE_CONFIGS[f"{size}_shallow_decoder"]
    extra: dict[str, Any] = {}
    if version != "v1":
        hidden = (
            presets.V1_1_PATCH_EMBED_HIDDEN_SIZES
            if version == "v1.1"
            else presets.V1_2_PATCH_EMBED_HIDDEN_SIZES
        )
        groups = {m: ModalityTokenization(g) for m, g in presets.V1_1_BAND_GROUPS.items()}
        extra = {
            "tokenization_config": TokenizationConfig(overrides=groups),
            "use_linear_patch_embed": True,
            "patch_embed_hidden_sizes": hidden[size],
            "band_dropout_rate": presets.V1_1_BAND_DROPOUT_RATE,
            "random_band_dropout": True,
            "band_dropout_modalities": presets.V1_1_BAND_DROPOUT_MODALITIES,
        }
    if version == "v1.2":
        extra.update(
            position_encoding=presets.V1_2_POS_ENCODING,
            rope_mixed_base=presets.V1_2_ROPE_MIXED_BASE,
            rope_temporal_coordinate_scale=presets.V1_2_ROPE_TEMPORAL_COORDINATE_SCALE,
        )
    config = EncoderConfig(
        embedding_size=int(cfg["encoder_embedding_size"]),
        num_heads=int(cfg["encoder_num_heads"]),
        depth=int(cfg["encoder_depth"]),
        mlp_ratio=float(cfg["mlp_ratio"]),
        supported_modality_names=list(modalities or presets.DEFAULT_MODALITIES),
        max_patch_size=max_patch_size,
        drop_path=0.1,
        max_sequence_length=12,
        **extra,
    )
    return config.as_config_dict()


def build_encoder(encoder_config: dict[str, Any]) -> OlmoEarthNet:
    """The package's encoder for a config dict (random weights, eval mode)."""
    cfg = _renamed_classes(copy.deepcopy(encoder_config))
    try:
        config = Config.from_dict(cfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"not an OlmoEarth EncoderConfig: {err}") from err
    if not isinstance(config, EncoderConfig):
        raise ValueError(f"expected an OlmoEarth EncoderConfig, got {type(config).__name__}")
    return config.build().eval()


def random_encoder(
    size: OlmoEarthSize, version: PresetVersion, seed: int = 0, max_patch_size: int = 8
) -> LoadedOlmoEarth:
    """A published architecture with seeded random weights (the package's initialization)."""
    config = preset_config(size, version, max_patch_size=max_patch_size)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build_encoder(config)
    return LoadedOlmoEarth(net, config, size, version, ENCODER_INPUTS, "random init")


def describe_config(encoder_config: dict[str, Any]) -> tuple[str | None, str]:
    """(size or None, version) of an encoder config."""
    width, depth = encoder_config.get("embedding_size"), encoder_config.get("depth")
    heads = encoder_config.get("num_heads")
    size = next(
        (
            name.removesuffix("_shallow_decoder")
            for name, c in presets.MODEL_SIZE_CONFIGS.items()
            if (c["encoder_embedding_size"], c["encoder_depth"], c["encoder_num_heads"])
            == (width, depth, heads)
        ),
        None,
    )
    if encoder_config.get("attention_pooler_config"):
        version = "v1.3"
    elif encoder_config.get("position_encoding") == presets.V1_2_POS_ENCODING:
        version = "v1.2"
    elif encoder_config.get("use_linear_patch_embed"):
        version = "v1.1"
    else:
        version = "v1"
    return size, version


def hub_id(name: str) -> ModelID | None:
    """The OlmoEarth model a hub id, repo id or ModelID name stands for, else None."""
    for model in ModelID:
        if name in (model.value, model.repo_id(), model.name):
            return model
    return None


def resolve(path: str | Path) -> Path:
    """The local folder of OlmoEarth weights: a bundle, a checkpoint or a cached hub id.

    A path to a bundle's `config.json` or `weights.pth` stands for its folder.

    Raises:
        FileNotFoundError: no such folder, or a hub id that is not in the local cache (the
            message says which files to download and where to put them).

    """
    local = Path(path).expanduser()
    if local.is_file() and local.name in (CONFIG_JSON, WEIGHTS_PTH):
        local = local.parent
    if local.is_dir():
        if not (local / CONFIG_JSON).is_file():
            raise FileNotFoundError(f"{local}: no {CONFIG_JSON} (an OlmoEarth bundle has one)")
        return local
    model = hub_id(str(path))
    if model is None:
        known = ", ".join(m.value for m in ModelID)
        raise FileNotFoundError(
            f"OlmoEarth weights not found: {path} is no local folder (a release bundle with "
            f"{CONFIG_JSON} + {WEIGHTS_PTH}, or an olmo-core checkpoint with {CONFIG_JSON} + "
            f"{CHECKPOINT_DIR}/) and no OlmoEarth model id ({known})"
        )
    return _cached(model)


def _cached(model: ModelID) -> Path:
    """The Hugging Face cache folder holding both files of `model`, or a clear error."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(model.repo_id(), f) for f in (CONFIG_JSON, WEIGHTS_PTH)]
    paths = [Path(p) for p in found if isinstance(p, str)]
    if len(paths) == 2 and paths[0].parent == paths[1].parent:
        return paths[0].parent
    raise FileNotFoundError(
        f"OlmoEarth model {model.value} is not on this machine, and Helios does not download "
        f"weights at run time. Download {CONFIG_JSON} and {WEIGHTS_PTH} from "
        f"https://huggingface.co/{model.repo_id()} into one folder, e.g. "
        f"`huggingface-cli download {model.repo_id()} {CONFIG_JSON} {WEIGHTS_PTH} "
        f"--local-dir models/{model.value}`, and give that folder as the path "
        f"(the Hugging Face cache, $HF_HUB_CACHE, is also searched)"
    )


def load_weights_folder(
    path: str | Path,
    size: OlmoEarthSize | None = None,
    version: OlmoEarthVersion | None = None,
) -> LoadedOlmoEarth:
    """The encoder of a bundle, checkpoint folder or cached hub id, loaded strictly.

    `size` and `version`, when given, must be what the config describes.

    Raises:
        FileNotFoundError: see `resolve`; a bundle without weights.pth.
        ValueError: a config of another size or version, or weights that do not match it
            (the message names the keys).

    """
    root = resolve(path)
    config = _read_json(root / CONFIG_JSON)
    encoder_config = _encoder_config(config, root)
    got_size, got_version = describe_config(encoder_config)
    where = str(root)
    if size is not None and got_size != size:
        raise ValueError(f"{where}: {CONFIG_JSON} describes {_label(encoder_config)}, not {size}")
    if version is not None and got_version != version:
        raise ValueError(f"{where}: {CONFIG_JSON} describes OlmoEarth {got_version}, not {version}")
    net = build_encoder(encoder_config)
    if (root / WEIGHTS_PTH).is_file():
        state = encoder_state(load_weights(root / WEIGHTS_PTH), str(root / WEIGHTS_PTH))
        check_width(net, state, encoder_config, str(root / WEIGHTS_PTH))
        load_strict(net, state, str(root / WEIGHTS_PTH))
    elif (root / CHECKPOINT_DIR).is_dir():
        _load_distributed(net, root / CHECKPOINT_DIR, encoder_config)
    else:
        raise FileNotFoundError(f"{where}: neither {WEIGHTS_PTH} nor {CHECKPOINT_DIR}/ is there")
    inputs = encoder_inputs(config, encoder_config)
    return LoadedOlmoEarth(net.eval(), encoder_config, got_size, got_version, inputs, where)


def folder_encoder_config(path: str | Path) -> dict[str, Any]:
    """The encoder config of a local bundle or checkpoint folder (its config.json)."""
    root = resolve(path)
    return _encoder_config(_read_json(root / CONFIG_JSON), root)


def encoder_state(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """The `encoder.*` entries of a LatentMIM state dict, prefix removed, legacy keys dropped.

    Raises:
        ValueError: no `encoder.*` key (another prefix, such as an rslearn checkpoint's), or
            keys that belong to no part of an OlmoEarth model.

    """
    enc = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    if not enc:
        prefixes = sorted({".".join(k.split(".")[:2]) for k in state})[:5]
        raise ValueError(
            f"{source}: no encoder.* keys, so this is not an OlmoEarth LatentMIM state dict "
            f"(keys start with {prefixes}); an rslearn fine-tune checkpoint is read by the "
            "runner's model.yaml + checkpoint.ckpt path instead"
        )
    stray = [k for k in state if not k.startswith(("encoder.", *OTHER_PARTS))]
    if stray:
        more = f" (+{len(stray) - 5} more)" if len(stray) > 5 else ""
        raise ValueError(f"{source}: keys outside an OlmoEarth model: {stray[:5]}{more}")
    return {k: v for k, v in enc.items() if k not in LEGACY_KEYS}


def infer_preset(state: dict[str, Tensor], source: str) -> dict[str, Any]:
    """The published architecture an encoder state dict (no prefix) has, as a config dict.

    For weights that travel without their config (an rslearn fine-tune's checkpoint): width
    and depth give the size, RoPE and pixel projections the version, the channel embeddings
    the modalities and the kernels the maximum patch size. The caller loads the state strictly,
    so anything else that differs is named then.

    Raises:
        ValueError: no published size has this width and depth, or a v1.3 encoder (its
            pooler is not described by the weights alone).

    """
    width = state.get("norm.weight")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    size = next(
        (
            n.removesuffix("_shallow_decoder")
            for n, c in presets.MODEL_SIZE_CONFIGS.items()
            if width is not None
            and (c["encoder_embedding_size"], c["encoder_depth"]) == (int(width.shape[0]), depth)
        ),
        None,
    )
    if size is None:
        raise ValueError(
            f"{source}: no OlmoEarth size has these weights' width "
            f"({None if width is None else int(width.shape[0])}) and depth ({depth})"
        )
    if any(k.startswith("attention_pooler.") for k in state):
        raise ValueError(f"{source}: an OlmoEarth v1.3 encoder needs its bundle's config.json")
    pixel = [v for k, v in state.items() if k.endswith(".pixel_proj.0.weight")]
    if any(k.endswith("attn.rope_mixed_freqs") for k in state):
        version: PresetVersion = "v1.2"
    else:
        version = "v1.1" if pixel else "v1"
    channel = "composite_encodings.per_modality_channel_embeddings."
    found = [k.removeprefix(channel) for k in state if k.startswith(channel)]
    order = list(presets.DEFAULT_MODALITIES)
    modalities = sorted(found, key=lambda m: order.index(m) if m in order else len(order))
    kernel = next(
        v
        for k, v in state.items()
        if k.startswith("patch_embeddings.") and k.endswith(".proj.weight")
    )
    # v1: a [D, C, P, P] kernel; v1.1+: [D, hidden * P * P] after a per-pixel projection
    patch = round((kernel.shape[1] / pixel[0].shape[0]) ** 0.5) if pixel else kernel.shape[-1]
    return preset_config(cast(OlmoEarthSize, size), version, modalities, int(patch))


def check_width(
    net: OlmoEarthNet, state: dict[str, Tensor], encoder_config: dict[str, Any], source: str
) -> None:
    """Refuse weights of another width or depth than the config's, naming both sizes."""
    width = state.get("norm.weight")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    want = (int(encoder_config["embedding_size"]), int(encoder_config["depth"]))
    have = (None if width is None else int(width.shape[0]), depth)
    if width is not None and have != want:
        size = next(
            (
                n.removesuffix("_shallow_decoder")
                for n, c in presets.MODEL_SIZE_CONFIGS.items()
                if (c["encoder_embedding_size"], c["encoder_depth"]) == have
            ),
            "an unknown size",
        )
        raise ValueError(
            f"{source}: the weights are {size} ({have[0]} wide, {depth} blocks) but the config "
            f"describes {_label(encoder_config)}: wrong size"
        )


def encoder_inputs(config: dict[str, Any], encoder_config: dict[str, Any]) -> tuple[str, ...]:
    """What the encoder was trained to encode: the config's record, else S2 L2A, S1, Landsat."""
    supported = list(encoder_config.get("supported_modality_names") or [])
    decode_only = None
    for section in ("train_module", "data_loader"):
        strategy = (config.get(section) or {}).get("masking_config", {}).get("strategy_config", {})
        decode_only = strategy.get("only_decode_modalities")
        if decode_only is not None:
            break
    if decode_only is None:
        return tuple(m for m in ENCODER_INPUTS if m in supported)
    return tuple(m for m in supported if m not in decode_only)


def _load_distributed(net: OlmoEarthNet, folder: Path, encoder_config: dict[str, Any]) -> None:
    """Load `model.encoder.*` of an olmo-core distributed checkpoint, every key checked."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(folder))
    meta = reader.read_metadata().state_dict_metadata
    prefix = "model.encoder."
    shells = {
        k.removeprefix(prefix): torch.empty(tuple(m.size), dtype=m.properties.dtype)
        for k, m in meta.items()
        if k.startswith(prefix)
        and isinstance(m, TensorStorageMetadata)
        and k.removeprefix(prefix) not in LEGACY_KEYS
    }
    if not shells:
        raise ValueError(f"{folder}: no {prefix}* tensors; not an OlmoEarth training checkpoint")
    check_width(net, shells, encoder_config, str(folder))
    load_strict(net, shells, str(folder))  # checks every key and shape; values come next
    target = {prefix + k: v for k, v in net.state_dict().items()}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
        warnings.filterwarnings("ignore", ".*single process", UserWarning)
        dcp.load(target, storage_reader=reader)  # in place, into the parameters themselves


def _encoder_config(config: dict[str, Any], root: Path) -> dict[str, Any]:
    model = config.get("model")
    enc = model.get("encoder_config") if isinstance(model, dict) else None
    if not isinstance(enc, dict):
        raise ValueError(f"{root / CONFIG_JSON}: no model.encoder_config (not an OlmoEarth config)")
    return cast(dict[str, Any], _renamed_classes(copy.deepcopy(enc)))


def _renamed_classes(obj: Any) -> Any:
    """Old configs name the encoder module `flexihelios`; the package calls it `flexi_vit`."""
    if isinstance(obj, dict):
        out = {k: _renamed_classes(v) for k, v in obj.items()}
        name = out.get(Config.CLASS_NAME_FIELD)
        if isinstance(name, str):
            out[Config.CLASS_NAME_FIELD] = name.replace(".flexihelios.", ".flexi_vit.")
        return out
    if isinstance(obj, list):
        return [_renamed_classes(v) for v in obj]
    return obj


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _label(encoder_config: dict[str, Any]) -> str:
    size, version = describe_config(encoder_config)
    width, depth = encoder_config.get("embedding_size"), encoder_config.get("depth")
    return f"{size or 'a custom size'} {version} ({width} wide, {depth} blocks)"
