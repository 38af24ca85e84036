"""Golden values from the reference OlmoEarth implementation (``olmoearth-pretrain`` 0.1.2).

Regenerate with::

    python tests/peer/loss_golden.py    # any Python >= 3.11; --draws N, --skip-masking

The script does not import Helios. It runs inside the peer environment
``.peer/olmoearth-pretrain`` (gitignored): when started with any other interpreter it creates that
venv if needed, installs the reference into it (``torch==2.14.1``, ``olmoearth-pretrain==0.1.2``
with ``--no-deps`` because its metadata pins ``torch<2.10``, then the few packages that the loss
and masking modules import: ``ai2-olmo-core==2.6.0``, ``class-registry``, ``einops``,
``setuptools<81`` for ``pkg_resources``) and re-executes itself there. The reference wheel also
ships a top-level ``helios`` compatibility shim, which is why it must never be installed into
Helios's own ``.venv``.

It writes two files that the default test run reads (no peer install needed there):

``tests/train/golden/olmoearth_losses.json``
    ``cases``: seeded predictions, targets (float32, base64 of little-endian bytes) and int token
    masks (nested lists, `MaskValue` ints) per modality as [B, h, w, T, S] (+ D), pooled
    embeddings of two views [B, D], and the reference's loss values on them, computed in float32
    (``outputs``) and on the same inputs upcast to float64 (``outputs_float64``); a loss that
    raises records ``{"error": ...}``. ``mae_cases``: pixel-level predictions/targets
    [B, H, W, T, C] with token masks [B, h, w, T, S] and patch size, and the reference ``MAELoss``.

``tests/data/golden/olmoearth_masking.json``
    ``layouts``: token grids (which tokens have data, as the reference reads a token: the mask of
    its top-left pixel; ``any_pixel_missing`` too where they differ) built into reference
    ``OlmoEarthSample`` batches. ``results``: for each layout, strategy configuration and ratio
    setting, statistics over ``draws`` seeded calls (``torch.manual_seed(s)``,
    ``np.random.seed(s)``, s = 0..draws-1) of the reference's ``apply_mask``: per sample,
    modality and band set the mean/min/max count of each mask value; per-sample totals; how many
    draws left a sample with no encoder or no decoder token; per token a bitmask of the values it
    ever took (bit v set: value v seen; one hex digit per token); invariant counts (missing
    tokens not left MISSING, available tokens made MISSING, patches whose pixels disagree);
    structure fractions (positions or timesteps whose tokens all share one value; band sets
    holding both encoder and decoder tokens); and the token masks of draw 0. A setting the
    reference cannot run records ``{"error": ...}``.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PEER_ENV = REPO / ".peer" / "olmoearth-pretrain"
LOSS_OUT = REPO / "tests" / "train" / "golden" / "olmoearth_losses.json"
MASK_OUT = REPO / "tests" / "data" / "golden" / "olmoearth_masking.json"
REFERENCE = "olmoearth-pretrain==0.1.2"
PIP_STEPS: list[list[str]] = [
    ["torch==2.14.1"],
    ["--no-deps", REFERENCE],
    [
        "ai2-olmo-core==2.6.0",
        "class-registry==2.1.2",
        "einops>=0.7.0",
        "numpy>=1.26.4",
        "universal-pathlib>=0.2.5",
        "huggingface_hub",
        "setuptools<81",
    ],
]
PROBE = "import olmoearth_pretrain.train.loss, olmoearth_pretrain.train.masking"
MISSING_VALUE = -99999
ENC, TGT, DEC, MIS = 0, 1, 2, 3
HELIOS_NAMES = {"era5_10": "era5"}
"""Reference modality names whose Helios name differs."""
TAU = 0.1
RATIOS: list[tuple[float, float]] = [(0.5, 0.5), (0.3, 0.5), (0.1, 0.75)]
ONLY_DECODE = ["worldcover", "srtm"]


# -- peer environment -------------------------------------------------------------------------
def _peer_python() -> Path:
    return PEER_ENV / "bin" / "python"


def _in_peer_env() -> bool:
    return Path(sys.prefix).resolve() == PEER_ENV.resolve()


def ensure_peer_env() -> Path:
    """Create and fill the peer venv if needed; return its interpreter."""
    py = _peer_python()
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
    probe = subprocess.run([str(py), "-W", "ignore", "-c", PROBE], capture_output=True)
    if probe.returncode != 0:
        for step in PIP_STEPS:
            subprocess.run([str(py), "-m", "pip", "install", *step], check=True)
    return py


# -- helpers ----------------------------------------------------------------------------------
def _f32(a: Any) -> dict[str, Any]:
    """float32 array as {"dtype", "shape", "b64"} (little-endian bytes)."""
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(a, dtype="<f4"))
    return {
        "dtype": "float32",
        "shape": list(arr.shape),
        "b64": base64.b64encode(arr.tobytes()).decode("ascii"),
    }


def _ints(a: Any) -> Any:
    import numpy as np

    return np.asarray(a).astype(int).tolist()


def _is_numeric(obj: Any) -> bool:
    if isinstance(obj, list):
        return all(_is_numeric(x) for x in obj)
    return isinstance(obj, (int, float)) and not isinstance(obj, bool)


def _to_json(obj: Any, level: int = 0) -> str:
    """JSON with one key per line; lists of numbers (nested or not) stay on one line."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_to_json(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and not _is_numeric(obj):
        items = [f"{inner}{_to_json(v, level + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, separators=(",", ":"))


def _dump(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_to_json(obj) + "\n")


def _digits(a: Any) -> dict[str, Any]:
    """Small non-negative ints (< 16) as {"shape", "hex"}: one hex digit per entry, C order."""
    import numpy as np

    arr = np.asarray(a).astype(int)
    return {"shape": list(arr.shape), "hex": "".join(f"{v:x}" for v in arr.reshape(-1))}


def _meta(extra: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata as md

    import numpy as np
    import torch

    return {
        "generator": "tests/peer/loss_golden.py",
        "regenerate": "python tests/peer/loss_golden.py",
        "reference": REFERENCE,
        "versions": {
            "olmoearth-pretrain": md.version("olmoearth-pretrain"),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "mask_values": {"ENCODER": ENC, "TARGET_ONLY": TGT, "DECODER": DEC, "MISSING": MIS},
        **extra,
    }


# -- losses -----------------------------------------------------------------------------------
def _reference_losses() -> dict[str, Callable[[], Any]]:
    from olmoearth_pretrain.train import loss as L

    return {
        "patch_discrimination": lambda: L.PatchDiscriminationLoss(tau=TAU),
        "patch_discrimination_tau0.2": lambda: L.PatchDiscriminationLoss(tau=0.2),
        "modality_patch_discrimination": lambda: L.ModalityPatchDiscriminationLoss(tau=TAU),
        "modality_patch_discrimination_vec": lambda: L.ModalityPatchDiscriminationLossVec(tau=TAU),
        "modality_patch_discrimination_masked_negatives_vec": (
            lambda: L.ModalityPatchDiscriminationMaskedNegativesVec(
                tau=TAU, same_target_threshold=0.999, mask_negatives_for_modalities=["worldcover"]
            )
        ),
        "all_discrimination": lambda: L.AllDiscriminationLoss(tau=TAU),
        "l1": L.L1Loss,
        "l2": L.L2Loss,
        "cosine_similarity": L.CosineSimilarityLoss,
    }


def _safe(fn: Callable[[], Any]) -> Any:
    """The scalar `fn()` as a float ("nan"/"inf"/"-inf" strings if not finite), or its error."""
    try:
        value = float(fn().item())
    except Exception as exc:  # the reference raises on some edge cases: record it
        return {"error": f"{type(exc).__name__}: {exc}"}
    return value if math.isfinite(value) else str(value)


def _evaluate_losses(case: dict[str, Any], arrays: dict[str, Any], double: bool) -> dict[str, Any]:
    import torch
    from olmoearth_pretrain.nn.flexi_vit import TokensAndMasks
    from olmoearth_pretrain.train.loss import InfoNCELoss

    dtype = torch.float64 if double else torch.float32
    pred: dict[str, Any] = {}
    tgt: dict[str, Any] = {}
    for name in case["modalities"]:
        mask = torch.tensor(arrays[name]["mask"], dtype=torch.long)
        pred[name] = torch.tensor(arrays[name]["pred"], dtype=dtype)
        tgt[name] = torch.tensor(arrays[name]["target"], dtype=dtype)
        pred[f"{name}_mask"] = mask
        tgt[f"{name}_mask"] = mask
    p, t = TokensAndMasks(**pred), TokensAndMasks(**tgt)
    out: dict[str, Any] = {}
    for key, make in _reference_losses().items():
        out[key] = _safe(lambda make=make: make().compute(p, t))
    za = torch.tensor(arrays["pooled_a"], dtype=dtype)
    zb = torch.tensor(arrays["pooled_b"], dtype=dtype)
    nce = InfoNCELoss(tau=TAU, weight=1.0)
    out["info_nce_a_b"] = _safe(lambda: nce.compute(za, zb))
    out["info_nce_b_a"] = _safe(lambda: nce.compute(zb, za))
    out["info_nce_tau0.2_a_b"] = _safe(lambda: InfoNCELoss(tau=0.2).compute(za, zb))
    return out


def _loss_case(
    name: str,
    seed: int,
    batch: int,
    dim: int,
    grids: dict[str, tuple[int, int, int, int]],
    probs: tuple[float, float, float, float] = (0.3, 0.15, 0.4, 0.15),
    edit: Callable[[dict[str, Any]], None] | None = None,
    scale: float = 1.0,
    note: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One seeded case: masks drawn with `probs` over (ENC, TGT, DEC, MIS), then `edit`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays: dict[str, Any] = {}
    for mod, (h, w, t, s) in grids.items():
        shape = (batch, h, w, t, s)
        arrays[mod] = {
            "mask": rng.choice(4, size=shape, p=probs).astype(np.int64),
            "pred": (rng.standard_normal((*shape, dim)) * scale).astype(np.float32),
            "target": (rng.standard_normal((*shape, dim)) * scale + 0.5).astype(np.float32),
        }
    arrays["pooled_a"] = rng.standard_normal((batch, dim)).astype(np.float32)
    arrays["pooled_b"] = (arrays["pooled_a"] + rng.standard_normal((batch, dim))).astype(np.float32)
    if edit is not None:
        edit(arrays)
    case: dict[str, Any] = {
        "name": name,
        "note": note,
        "seed": seed,
        "batch_size": batch,
        "dim": dim,
        "tau": TAU,
        "modalities": {},
    }
    for mod in grids:
        a = arrays[mod]
        case["modalities"][mod] = {
            "shape": list(a["mask"].shape),
            "mask": _ints(a["mask"]),
            "pred": _f32(a["pred"]),
            "target": _f32(a["target"]),
        }
    case["pooled_a"] = _f32(arrays["pooled_a"])
    case["pooled_b"] = _f32(arrays["pooled_b"])
    dec = sum(
        (arrays[m]["mask"] == DEC).reshape(batch, -1).sum(axis=1) for m in grids
    )  # per sample
    case["decoder_tokens_per_sample"] = _ints(dec)
    return case, arrays


def _edit_empty_sample(a: dict[str, Any]) -> None:
    for m in ("sentinel2_l2a", "sentinel1", "worldcover"):
        a[m]["mask"][1] = MIS  # sample 1: every token missing
    a["sentinel1"]["mask"][2] = ENC  # sample 2: S1 all encoder


def _edit_one_decoder(a: dict[str, Any]) -> None:
    for m in ("sentinel2_l2a", "sentinel1", "worldcover"):
        a[m]["mask"][0][a[m]["mask"][0] == DEC] = TGT
    a["sentinel2_l2a"]["mask"][0, 1, 0, 2, 1] = DEC  # sample 0: exactly one decoder token


def _edit_no_decoder(a: dict[str, Any]) -> None:
    for m in ("sentinel2_l2a", "sentinel1", "worldcover"):
        a[m]["mask"][a[m]["mask"] == DEC] = ENC


def _edit_repeated_targets(a: dict[str, Any]) -> None:
    import numpy as np

    rng = np.random.default_rng(99)
    wc = a["worldcover"]
    protos = rng.standard_normal((3, wc["target"].shape[-1])).astype(np.float32)
    labels = rng.integers(0, 3, size=wc["target"].shape[:-1])
    wc["target"] = protos[labels]  # few distinct targets, as for a class map


def build_loss_golden() -> dict[str, Any]:
    """Seeded cases and the reference's loss values on them."""

    small = {"sentinel2_l2a": (2, 2, 3, 3), "sentinel1": (2, 2, 3, 1), "worldcover": (2, 2, 1, 1)}
    large = {"sentinel2_l2a": (3, 3, 3, 3), "sentinel1": (3, 3, 3, 1), "worldcover": (3, 3, 1, 1)}
    specs = [
        _loss_case("basic", 0, 3, 16, small, note="mixed mask values, three modalities"),
        _loss_case(
            "empty_sample",
            1,
            3,
            16,
            small,
            edit=_edit_empty_sample,
            note="sample 1 has every token MISSING; sample 2's sentinel1 is all ENCODER",
        ),
        _loss_case(
            "one_decoder",
            2,
            2,
            16,
            small,
            edit=_edit_one_decoder,
            note="sample 0 has exactly one DECODER token",
        ),
        _loss_case("batch_of_one", 3, 1, 16, small, note="B = 1"),
        _loss_case("larger", 4, 4, 32, large, scale=3.0, note="more tokens, D = 32, scale 3"),
        _loss_case(
            "all_decoder",
            5,
            2,
            8,
            small,
            probs=(0.0, 0.0, 1.0, 0.0),
            note="every token DECODER",
        ),
        _loss_case(
            "no_decoder",
            6,
            2,
            8,
            small,
            edit=_edit_no_decoder,
            note="no DECODER token anywhere (the reference's per-sample losses raise)",
        ),
        _loss_case(
            "repeated_targets",
            7,
            3,
            16,
            large,
            edit=_edit_repeated_targets,
            note="worldcover targets take 3 distinct values (masked-negatives loss)",
        ),
    ]
    cases = []
    for case, arrays in specs:
        case["outputs"] = _evaluate_losses(case, arrays, double=False)
        case["outputs_float64"] = _evaluate_losses(case, arrays, double=True)
        cases.append(case)

    mae_cases = [_mae_case("mae_basic", 10, 2, 2, 3, 2), _mae_case("mae_p1", 11, 1, 1, 4, 2)]
    return {
        "meta": _meta(
            {
                "losses": {
                    "patch_discrimination": "PatchDiscriminationLoss(tau=0.1) (alias "
                    "patch_discrimination_new); includes the 2*tau factor",
                    "modality_patch_discrimination": "ModalityPatchDiscriminationLoss(tau=0.1): "
                    "PatchDisc per modality, summed over modalities (OlmoEarth v1 recipe)",
                    "modality_patch_discrimination_masked_negatives_vec": "v1.1/v1.2 recipe loss, "
                    "mask_negatives_for_modalities=['worldcover'], threshold 0.999",
                    "info_nce_a_b": "InfoNCELoss(tau=0.1).compute(pooled_a, pooled_b): one "
                    "direction only (the reference adds it with its config weight: 0.1 in v1)",
                },
                "tensor_encoding": "float32 little-endian bytes, base64; shape given",
                "non_finite": 'a non-finite loss is the string "nan", "inf" or "-inf"',
            }
        ),
        "cases": cases,
        "mae_cases": mae_cases,
    }


def _mae_case(name: str, seed: int, batch: int, patch: int, h: int, t: int) -> dict[str, Any]:
    """Pixel-level MAE case over sentinel2_l2a (3 band sets) and worldcover."""
    import numpy as np
    import torch
    from olmoearth_pretrain.datatypes import MaskedOlmoEarthSample
    from olmoearth_pretrain.nn.flexi_vit import TokensAndMasks
    from olmoearth_pretrain.train.loss import MAELoss

    rng = np.random.default_rng(seed)
    layout = {"sentinel2_l2a": (t, 3, 12), "worldcover": (1, 1, 1)}
    pred_d: dict[str, Any] = {}
    tgt_d: dict[str, Any] = {"timestamps": torch.zeros(batch, t, 3, dtype=torch.long)}
    case: dict[str, Any] = {"name": name, "seed": seed, "patch_size": patch, "modalities": {}}
    for mod, (tt, s, c) in layout.items():
        tok = rng.choice(4, size=(batch, h, h, tt, s), p=(0.3, 0.2, 0.4, 0.1)).astype(np.int64)
        pix = tok.repeat(patch, axis=1).repeat(patch, axis=2)
        pred = rng.standard_normal((batch, h * patch, h * patch, tt, c)).astype(np.float32)
        target = rng.standard_normal((batch, h * patch, h * patch, tt, c)).astype(np.float32)
        pred_d[mod] = torch.tensor(pred)
        pred_d[f"{mod}_mask"] = torch.tensor(pix)
        tgt_d[mod] = torch.tensor(target)
        tgt_d[f"{mod}_mask"] = torch.tensor(pix)
        case["modalities"][mod] = {
            "token_mask": _ints(tok),
            "pred": _f32(pred),
            "target": _f32(target),
        }
    p, tg = TokensAndMasks(**pred_d), MaskedOlmoEarthSample(**tgt_d)
    case["outputs"] = {
        "mae_mse_decoder": _safe(lambda: MAELoss("MSELoss", only_decode=True).compute(p, tg)),
        "mae_l1_decoder": _safe(lambda: MAELoss("L1Loss", only_decode=True).compute(p, tg)),
        "mae_mse_all_available": _safe(
            lambda: MAELoss("MSELoss", only_decode=False).compute(p, tg)
        ),
    }
    return case


# -- masking ----------------------------------------------------------------------------------
BAND_SETS = {"sentinel2_l2a": [4, 6, 2], "sentinel1": [2], "worldcover": [1], "srtm": [1]}
BAND_SETS["era5_10"] = [6]


def _layouts() -> dict[str, dict[str, Any]]:
    """Token-level availability [B, h, w, T, S] (bool) per modality, and pixel holes."""
    import numpy as np

    def full(b: int, h: int, t: int, s: int) -> Any:
        return np.ones((b, h, h, t, s), dtype=bool)

    out: dict[str, dict[str, Any]] = {}

    # dense: time masking is active (every timestep complete in every sample for some modality)
    b, h, t = 3, 4, 5
    av = {
        "sentinel2_l2a": full(b, h, t, 3),
        "sentinel1": full(b, h, t, 1),
        "worldcover": full(b, h, 1, 1),
        "srtm": full(b, h, 1, 1),
    }
    av["sentinel1"][1, :, :, 4] = False
    av["worldcover"][1] = False
    av["srtm"][2, 0, 0] = False
    av["sentinel2_l2a"][2, :, :, 1, 2] = False
    out["dense"] = {"patch_size": 2, "grid": [h, h], "timesteps": t, "available": av}

    # sparse: much missing; batch-level valid timesteps < 3 so time masking falls back
    b, h, t = 4, 4, 4
    av = {
        "sentinel2_l2a": full(b, h, t, 3),
        "sentinel1": full(b, h, t, 1),
        "worldcover": full(b, h, 1, 1),
        "srtm": full(b, h, 1, 1),
    }
    av["sentinel1"][1, :, :, [1, 3]] = False
    av["sentinel2_l2a"][1, :, :, 2, 2] = False
    av["worldcover"][1] = False
    av["sentinel1"][2] = False
    av["sentinel2_l2a"][2, :, :, 0] = False
    av["srtm"][2, 0, 0] = False
    av["sentinel2_l2a"][3, :, :, [0, 2, 3]] = False
    av["sentinel1"][3] = False
    av["srtm"][3] = False
    out["sparse"] = {"patch_size": 2, "grid": [h, h], "timesteps": t, "available": av}

    # with_era5: a non-spatial multitemporal modality
    b, h, t = 2, 2, 4
    av = {
        "sentinel2_l2a": full(b, h, t, 3),
        "sentinel1": full(b, h, t, 1),
        "era5_10": np.ones((b, 1, 1, t, 1), dtype=bool),
    }
    av["era5_10"][1, :, :, 0] = False
    out["with_era5"] = {"patch_size": 2, "grid": [h, h], "timesteps": t, "available": av}

    # tiny: batch of one, patch size 1
    b, h, t = 1, 2, 3
    av = {"sentinel2_l2a": full(b, h, t, 3), "worldcover": full(b, h, 1, 1)}
    out["tiny"] = {"patch_size": 1, "grid": [h, h], "timesteps": t, "available": av}

    # single_token: sample 0 has exactly one available token in total
    b, h, t = 2, 1, 1
    av = {"sentinel2_l2a": full(b, h, t, 3), "sentinel1": full(b, h, t, 1)}
    av["sentinel2_l2a"][0, ..., 1:] = False
    av["sentinel1"][0] = False
    out["single_token"] = {"patch_size": 1, "grid": [h, h], "timesteps": t, "available": av}

    # partial_pixel: single missing pixels inside tokens (the reference reads the top-left one)
    b, h, t = 1, 2, 3
    av = {"sentinel2_l2a": full(b, h, t, 3), "srtm": full(b, h, 1, 1)}
    out["partial_pixel"] = {
        "patch_size": 2,
        "grid": [h, h],
        "timesteps": t,
        "available": av,
        # (modality, sample, pixel y, pixel x, t, channel): one missing value each
        "pixel_holes": [
            ("srtm", 0, 1, 3, 0, 0),  # token (0, 1): bottom-right pixel only
            ("srtm", 0, 2, 0, 0, 0),  # token (1, 0): top-left pixel only
            ("sentinel2_l2a", 0, 3, 3, 0, 1),  # token (1, 1), t 0, band set 0: one band
        ],
    }
    return out


def _build_batch(layout: dict[str, Any], seed: int) -> tuple[Any, dict[str, Any]]:
    """Reference OlmoEarthSample for `layout`; returns it and the token availability it has."""
    import numpy as np
    import torch
    from olmoearth_pretrain.datatypes import OlmoEarthSample

    rng = np.random.default_rng(seed)
    p = layout["patch_size"]
    fields: dict[str, Any] = {}
    batch = 0
    for mod, av in layout["available"].items():
        sets = BAND_SETS[mod]
        b, h, w, t, _ = av.shape
        batch = b
        chan = np.concatenate([np.full(n, i) for i, n in enumerate(sets)])
        if mod == "era5_10":
            data = rng.random((b, t, sum(sets))).astype(np.float32)
            keep = av[:, 0, 0][..., chan]  # [B, T, C]
        else:
            data = rng.random((b, h * p, w * p, t, sum(sets))).astype(np.float32)
            keep = av.repeat(p, axis=1).repeat(p, axis=2)[..., chan]
        data[~keep] = MISSING_VALUE
        fields[mod] = data
    any_missing = {m: ~a for m, a in layout["available"].items()}
    for mod, bi, y, x, ti, c in layout.get("pixel_holes", []):
        fields[mod][bi, y, x, ti, c] = MISSING_VALUE
        s = int(np.concatenate([np.full(n, i) for i, n in enumerate(BAND_SETS[mod])])[c])
        any_missing[mod] = any_missing[mod].copy()
        any_missing[mod][bi, y // p, x // p, ti, s] = True
    t_max = layout["timesteps"]
    ts = np.zeros((batch, t_max, 3), dtype=np.int64)
    ts[..., 0] = 1
    ts[..., 1] = np.arange(t_max) % 12
    ts[..., 2] = 2024
    sample = OlmoEarthSample(
        **{k: torch.tensor(v) for k, v in fields.items()}, timestamps=torch.tensor(ts)
    )
    # availability as the reference's token reader sees it: the top-left pixel of each token
    seen = {}
    for mod, data in fields.items():
        sets = BAND_SETS[mod]
        bounds = np.cumsum([0, *sets])
        if mod == "era5_10":
            cols = [(data[..., a:z] == MISSING_VALUE).any(-1) for a, z in zip(bounds, bounds[1:])]
            seen[mod] = ~np.stack(cols, -1)[:, None, None]
        else:
            tl = data[:, ::p, ::p]
            cols = [(tl[..., a:z] == MISSING_VALUE).any(-1) for a, z in zip(bounds, bounds[1:])]
            seen[mod] = ~np.stack(cols, -1)
    return sample, {"top_left": seen, "any_pixel_missing": any_missing}


def _strategy_configs() -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "random": ("random", {}),
        "space": ("space", {}),
        "time": ("time", {}),
        "space_time": ("space_time", {}),
        "random_with_decode": ("random_with_decode", {}),
        "random_with_decode_only_decode": (
            "random_with_decode",
            {"only_decode_modalities": ONLY_DECODE},
        ),
        "random_time_with_decode": (
            "random_time_with_decode",
            {"random_ratio": 0.5, "only_decode_modalities": ONLY_DECODE},
        ),
        "random_time_with_decode_time_only": (
            "random_time_with_decode",
            {"random_ratio": 0.0, "only_decode_modalities": ONLY_DECODE},
        ),
        "random_time_with_decode_random_only": (
            "random_time_with_decode",
            {"random_ratio": 1.0, "only_decode_modalities": ONLY_DECODE},
        ),
        "modality_cross_random": ("modality_cross_random", {}),
        "modality_cross_random_v1": (
            "modality_cross_random",
            {"allow_encoding_decoding_same_bandset": True, "only_decode_modalities": ONLY_DECODE},
        ),
        "modality_cross_space": ("modality_cross_space", {}),
        "modality_cross_time": ("modality_cross_time", {}),
    }


def _token_masks(masked: Any, mods: list[str], p: int) -> dict[str, Any]:
    """Token-level masks [B, h, w, T, S] (numpy): the value of each token's top-left pixel."""
    import numpy as np

    out = {}
    for mod in mods:
        m = getattr(masked, f"{mod}_mask").numpy().astype(np.int64)
        if mod == "era5_10":
            out[mod] = m[:, None, None]
        else:
            out[mod] = m[:, ::p, ::p]
    return out


def _patch_disagreements(masked: Any, mods: list[str], p: int) -> int:
    """Patches whose non-missing pixels hold more than one mask value."""
    import numpy as np

    bad = 0
    for mod in mods:
        if mod == "era5_10" or p == 1:
            continue
        m = getattr(masked, f"{mod}_mask").numpy()
        b, hh, ww, t, s = m.shape
        blocks = m.reshape(b, hh // p, p, ww // p, p, t, s).transpose(0, 1, 3, 5, 6, 2, 4)
        blocks = blocks.reshape(*blocks.shape[:5], p * p)
        vals = np.where(blocks == MIS, -1, blocks)
        hi = vals.max(-1)
        lo = np.where(blocks == MIS, 99, blocks).min(-1)
        bad += int(((hi >= 0) & (lo < 99) & (hi != lo)).sum())
    return bad


def _run_strategy(
    layout: dict[str, Any],
    sample: Any,
    avail: dict[str, Any],
    key: str,
    kwargs: dict[str, Any],
    ratio: tuple[float, float],
    draws: int,
) -> dict[str, Any]:
    """`draws` seeded calls of one reference strategy on `sample`, summarised."""
    import numpy as np
    import torch
    from olmoearth_pretrain.train.masking import MASKING_STRATEGY_REGISTRY

    mods = list(layout["available"])
    p = layout["patch_size"]
    cls = MASKING_STRATEGY_REGISTRY.get_class(key)
    counts = {m: [] for m in mods}  # [draw] -> [B, S, 4]
    seen_bits = {m: np.zeros(avail[m].shape, dtype=np.int64) for m in mods}
    missing_violations = available_made_missing = patch_bad = 0
    space_ok = time_ok = 0
    mixed = {m: np.zeros(avail[m].shape[0::4], dtype=np.int64) for m in mods}  # [B, S]
    example: dict[str, Any] = {}
    spatial = [m for m in mods if m != "era5_10"]
    temporal = [m for m in mods if m in ("sentinel2_l2a", "sentinel1", "era5_10")]
    for s in range(draws):
        torch.manual_seed(s)
        np.random.seed(s)
        try:
            masked = cls(encode_ratio=ratio[0], decode_ratio=ratio[1], **kwargs).apply_mask(
                sample, patch_size=p
            )
        except Exception as exc:  # the reference does not support every layout: record it
            return {"error": f"{type(exc).__name__}: {exc}"}
        tok = _token_masks(masked, mods, p)
        if s == 0:
            example = {m: _digits(tok[m]) for m in mods}
        patch_bad += _patch_disagreements(masked, mods, p)
        for m in mods:
            v = tok[m]
            counts[m].append(np.stack([(v == k).sum(axis=(1, 2, 3)) for k in range(4)], -1))
            for k in range(4):
                seen_bits[m] |= np.where(v == k, 1 << k, 0)
            missing_violations += int(((~avail[m]) & (v != MIS)).sum())
            available_made_missing += int((avail[m] & (v == MIS)).sum())
            has_enc = (v == ENC).any(axis=(1, 2, 3))
            has_dec = (v == DEC).any(axis=(1, 2, 3))
            mixed[m] += has_enc & has_dec
        space_ok += int(_one_value_per_unit(tok, spatial, "space"))
        time_ok += int(_one_value_per_unit(tok, temporal, "time"))
    per = {m: np.stack(counts[m]) for m in mods}  # [N, B, S, 4]
    totals = sum(per[m].sum(axis=2) for m in mods)  # [N, B, 4]
    return {
        "counts_mean": {m: per[m].mean(0).round(6).tolist() for m in mods},
        "counts_min": {m: _ints(per[m].min(0)) for m in mods},
        "counts_max": {m: _ints(per[m].max(0)) for m in mods},
        "sample_totals_mean": totals.mean(0).round(6).tolist(),
        "sample_totals_min": _ints(totals.min(0)),
        "sample_totals_max": _ints(totals.max(0)),
        "draws_without_encoder": _ints((totals[..., ENC] == 0).sum(0)),
        "draws_without_decoder": _ints((totals[..., DEC] == 0).sum(0)),
        "values_seen_bits": {m: _digits(seen_bits[m]) for m in mods},
        "missing_not_missing": missing_violations,
        "available_made_missing": available_made_missing,
        "patch_disagreements": patch_bad,
        "space_consistent_fraction": space_ok / draws,
        "time_consistent_fraction": time_ok / draws,
        "bandset_enc_and_dec_fraction": {m: (mixed[m] / draws).round(6).tolist() for m in mods},
        "example_draw0": example,
    }


def _one_value_per_unit(tok: dict[str, Any], mods: list[str], kind: str) -> bool:
    """Whether each (sample, position or timestep) holds one value over `mods`' tokens.

    ``kind="space"`` groups the tokens at a spatial position, ``"time"`` those at a timestep;
    MISSING tokens are ignored.
    """
    import numpy as np

    if not mods:
        return True
    if kind == "space":
        if len({tok[m].shape[1:3] for m in mods}) != 1:
            return True
        cols = [tok[m].reshape(*tok[m].shape[:3], -1) for m in mods]
    else:
        if len({tok[m].shape[3] for m in mods}) != 1:
            return True
        cols = [
            tok[m].transpose(0, 3, 1, 2, 4).reshape(tok[m].shape[0], tok[m].shape[3], -1)
            for m in mods
        ]
    v = np.concatenate(cols, -1)
    hi = np.where(v == MIS, -1, v).max(-1)
    lo = np.where(v == MIS, 99, v).min(-1)
    return bool(((hi < 0) | (hi == lo)).all())


def build_masking_golden(draws: int) -> dict[str, Any]:
    """Statistics of the reference's masking strategies on seeded layouts."""
    import numpy as np

    layouts_out: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for lname, layout in _layouts().items():
        sample, avail = _build_batch(layout, seed=len(lname))
        top_left = avail["top_left"]
        entry: dict[str, Any] = {
            "patch_size": layout["patch_size"],
            "grid": layout["grid"],
            "timesteps": layout["timesteps"],
            "batch_size": int(next(iter(top_left.values())).shape[0]),
            "modalities": {},
            "batch_valid_timesteps": _ints(sample.timesteps_with_at_least_one_modality)
            if "era5_10" not in top_left
            else None,
        }
        for m, a in top_left.items():
            info: dict[str, Any] = {
                "helios_name": HELIOS_NAMES.get(m, m),
                "shape": list(a.shape),
                "band_set_sizes": BAND_SETS[m],
                "available": _ints(a),
            }
            anym = avail["any_pixel_missing"][m]
            if not np.array_equal(~anym, a):
                info["any_pixel_missing"] = _ints(anym)
            entry["modalities"][m] = info
        layouts_out[lname] = entry
        results[lname] = {}
        for cname, (key, kwargs) in _strategy_configs().items():
            results[lname][cname] = {}
            for ratio in RATIOS:
                rkey = f"enc{ratio[0]}_dec{ratio[1]}"
                results[lname][cname][rkey] = _run_strategy(
                    layout, sample, top_left, key, kwargs, ratio, draws
                )
            print(f"masking {lname}/{cname} done", flush=True)
    configs = {c: {"registry_key": k, "kwargs": kw} for c, (k, kw) in _strategy_configs().items()}
    return {
        "meta": _meta(
            {
                "draws": draws,
                "ratios": [list(r) for r in RATIOS],
                "strategies": configs,
                "call": "cls(encode_ratio=, decode_ratio=, **kwargs).apply_mask(batch, "
                "patch_size=layout.patch_size) on the whole batch; token value = mask of the "
                "token's top-left pixel, as the reference's patch embedding reads it",
                "stats_shapes": "counts_*[modality]: [B][S][4 values]; sample_totals_*: [B][4]; "
                "values_seen_bits and example_draw0 [modality]: {shape: [B, h, w, T, S], hex: one "
                "hex digit per token in C order}; bandset_enc_and_dec_fraction[modality]: [B][S]",
            }
        ),
        "layouts": layouts_out,
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    """Regenerate both golden files (re-executing inside the peer env if needed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200, help="masking draws per setting")
    parser.add_argument("--skip-masking", action="store_true", help="only write the losses")
    args = parser.parse_args(argv)
    if not _in_peer_env():
        py = ensure_peer_env()
        os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    import olmoearth_pretrain

    origin = Path(olmoearth_pretrain.__file__).resolve()
    if PEER_ENV.resolve() not in origin.parents:
        raise SystemExit(f"olmoearth_pretrain imported from {origin}, not the peer env")
    _dump(build_loss_golden(), LOSS_OUT)
    print(f"wrote {LOSS_OUT.relative_to(REPO)}", flush=True)
    if not args.skip_masking:
        _dump(build_masking_golden(args.draws), MASK_OUT)
        print(f"wrote {MASK_OUT.relative_to(REPO)}", flush=True)


if __name__ == "__main__":
    main()
