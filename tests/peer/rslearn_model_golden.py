"""Record golden outputs of the rslearn fine-tune checkpoint fixture, computed by rslearn itself.

The fixture ``shared/fixtures/rslearn_olmoearth_nano/`` is a Lightning checkpoint written by
rslearn 0.0.27 for the model of ``shared/upstream/projects/sample/model.yaml``: an OlmoEarth nano
encoder (olmoearth-pretrain 0.0.2, patch size 4, mean-pooled over time and band sets), a
``PoolingDecoder(128 -> 6)`` (spatial max, then Linear) and a ``ClassificationHead`` (softmax)
for the task ``crop_type_mapping``. This script rebuilds that model the way the fixture's
``build.py`` did, loads ``checkpoint.ckpt`` into it strictly, and pushes fixed Sentinel-2 L2A
windows through rslearn's own path: ``MultiTask.process_inputs`` -> ``OlmoEarthNormalize`` (the
model.yaml transform) -> ``RslearnLightningModule.forward`` in eval mode.

Cases (each window is stored as its raw uint16 array, CTHW as rslearn reads it):

- ``single_timestep_32px``: 2 windows of 32x32 px, T = 1 (the model.yaml input, one layer
  ``sentinel2_l2a_mo08``); the encoder runs with ``fast_pass=True``.
- ``three_timesteps_16px``: 2 windows of 16x16 px, T = 3 (three monthly layers read with
  ``load_all_layers``); ``fast_pass=True``.
- ``ragged_timesteps_16px``: 2 windows of 16x16 px with T = 3 and T = 2; rslearn pads the
  second to T = 3 with zeros marked MISSING, so the encoder runs with ``fast_pass=False``
  (masked tokens are dropped, and in eval mode the zero padding rows are attended).

Outputs per case:

- ``float32``: the model as configured but with autocast disabled (``autocast_dtype=None``);
  compare a converted model to these at ~1e-5.
- ``bfloat16_autocast``: exactly as model.yaml runs it (OlmoEarth's default
  ``autocast_dtype="bfloat16"``, CPU autocast); only good to ~1e-2.
- ``float32_real_timestamps``: float32 with ``use_legacy_timestamps=False`` (months from the
  windows' time ranges instead of the legacy 0, 1, 2, ...).

Array fields (inputs, feature maps) are ``{"shape", "dtype", "encoding": "zlib+base64",
"data", "sha256"}`` with little-endian bytes in C order; ``sha256`` is of the raw bytes.
Floats are written with full float32 precision (Python's repr of the float32 value).

Regenerate (in the peer environment that has olmoearth-runner 0.1.14 / rslearn 0.0.27)::

    .peer/olmoearth-runner/bin/python tests/peer/rslearn_model_golden.py

Options: ``--fixture DIR`` (default ``<repo>/../shared/fixtures/rslearn_olmoearth_nano``) and
``--out FILE`` (default ``tests/runner/golden/rslearn_sample_model.json``). The script never
imports Helios and reaches no network (``HF_HUB_OFFLINE=1``; the encoder is built from the
fixture's ``olmoearth_config.json`` with ``random_initialization=True`` and then overwritten by
the checkpoint).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURE = REPO.parent / "shared" / "fixtures" / "rslearn_olmoearth_nano"
DEFAULT_OUT = REPO / "tests" / "runner" / "golden" / "rslearn_sample_model.json"

TASK = "crop_type_mapping"
CLASSES = ["Coffee", "Trees", "Grassland", "Maize", "Sugarcane", "Tea"]
BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09"]
"""The model.yaml band order of ``sentinel2_l2a`` (also OlmoEarth's own order)."""
PATCH_SIZE = 4
EMBEDDING_SIZE = 128
SEED = 20250409

# Typical vegetated-field L2A reflectance (x 10000) per band of BANDS.
_BASE = np.array([450, 750, 550, 3000, 1100, 2300, 2800, 3100, 2200, 1200, 400, 3200.0])


@dataclass
class Window:
    """One input window: uint16 reflectance [C, T, H, W] and the time range of each step."""

    image: np.ndarray
    time_ranges: list[tuple[datetime, datetime]]


def month_range(year: int, month: int) -> tuple[datetime, datetime]:
    """A monthly mosaic's time range: the 1st to the 28th of the month, UTC."""
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year, month, 28, tzinfo=timezone.utc)
    return start, end


def make_window(rng: np.random.Generator, size: int, months: list[int]) -> Window:
    """A plausible uint16 L2A window: per-band profile x smooth field x season, plus noise."""
    c, t = len(BANDS), len(months)
    coarse = rng.normal(0.0, 0.25, size=(size // 4 + 1, size // 4 + 1))
    field = np.kron(coarse, np.ones((4, 4)))[:size, :size]
    season = 1.0 + 0.15 * np.sin(np.array(months) / 12.0 * 2 * np.pi)
    image = _BASE[:, None, None, None] * (1.0 + field)[None, None] * season[None, :, None, None]
    image = image + rng.normal(0.0, 60.0, size=(c, t, size, size))
    image = np.clip(np.rint(image), 1, 10000).astype(np.uint16)
    return Window(image, [month_range(2024, m) for m in months])


def pack(arr: np.ndarray) -> dict[str, Any]:
    """A compact, exact JSON form of an array (little-endian, C order)."""
    arr = np.ascontiguousarray(arr)
    raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return {
        "shape": list(arr.shape),
        "dtype": arr.dtype.newbyteorder("<").str,
        "encoding": "zlib+base64",
        "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii"),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def unpack(obj: dict[str, Any]) -> np.ndarray:
    """Inverse of `pack`."""
    raw = zlib.decompress(base64.b64decode(obj["data"]))
    return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])


def floats(t: torch.Tensor) -> Any:
    """Nested lists of the float32 values as Python floats (exact)."""
    return t.detach().to(torch.float32).cpu().numpy().astype(np.float64).tolist()


def summary(arr: np.ndarray) -> dict[str, Any]:
    """sha256 of the float32 bytes plus float64 sum, sum of squares, min and max."""
    a32 = np.ascontiguousarray(arr, dtype="<f4")
    a64 = a32.astype(np.float64)
    return {
        "shape": list(a32.shape),
        "sha256_float32": hashlib.sha256(a32.tobytes()).hexdigest(),
        "sum": float(a64.sum()),
        "sum_sq": float((a64 * a64).sum()),
        "min": float(a64.min()),
        "max": float(a64.max()),
    }


def file_sha256(path: Path) -> str:
    """sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_module(fixture: Path, bundle_dir: Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Rebuild the fixture's RslearnLightningModule (as build.py did) and load the checkpoint."""
    from rslearn.models.multitask import MultiTaskModel
    from rslearn.models.olmoearth_pretrain.model import OlmoEarth
    from rslearn.models.pooling_decoder import PoolingDecoder
    from rslearn.train.lightning_module import RslearnLightningModule
    from rslearn.train.tasks.classification import ClassificationHead, ClassificationTask
    from rslearn.train.tasks.multi_task import MultiTask

    shutil.copyfile(fixture / "olmoearth_config.json", bundle_dir / "config.json")
    encoder = OlmoEarth(
        patch_size=PATCH_SIZE,
        model_path=str(bundle_dir),
        random_initialization=True,
        selector=["encoder"],
        embedding_size=EMBEDDING_SIZE,
    )
    model = MultiTaskModel(
        encoder=[encoder],
        decoders={
            TASK: [PoolingDecoder(in_channels=EMBEDDING_SIZE, out_channels=6), ClassificationHead()]
        },
    )
    task = MultiTask(
        tasks={TASK: ClassificationTask(property_name="category", classes=CLASSES)},
        input_mapping={TASK: {"label": "targets"}},
    )
    module = RslearnLightningModule(model=model, task=task, lr=1e-4)
    ckpt = torch.load(fixture / "checkpoint.ckpt", map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    result = module.load_state_dict(state, strict=True)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"checkpoint does not match the model: {result}")
    module.eval()
    info = {
        "checkpoint_sha256": file_sha256(fixture / "checkpoint.ckpt"),
        "olmoearth_config_sha256": file_sha256(fixture / "olmoearth_config.json"),
        "state_dict_tensors": len(state),
        "state_dict_prefixes": sorted({".".join(k.split(".")[:3]) for k in state}),
        "pytorch_lightning_version": ckpt.get("pytorch-lightning_version"),
    }
    return module, task, info


def run_case(
    module: Any,
    task: Any,
    windows: list[Window],
    *,
    autocast: bool,
    legacy_timestamps: bool,
    full_features: bool,
) -> dict[str, Any]:
    """Normalize `windows` with rslearn's transform and run the module; collect outputs.

    The encoder's pooled feature map [B, 128, h, w] is stored whole with `full_features`,
    else as a checksum.
    """
    from rasterio.crs import CRS
    from rslearn.models.olmoearth_pretrain.norm import OlmoEarthNormalize
    from rslearn.train.model_context import ModelContext, RasterImage, SampleMetadata
    from rslearn.utils.geometry import Projection

    olmoearth = module.model.encoder[0]
    olmoearth.autocast_dtype = torch.bfloat16 if autocast else None
    olmoearth.use_legacy_timestamps = legacy_timestamps
    normalize = OlmoEarthNormalize(band_names={"sentinel2_l2a": BANDS})
    projection = Projection(CRS.from_epsg(32636), 10, -10)

    inputs, metadatas, normalized = [], [], []
    for i, win in enumerate(windows):
        size = win.image.shape[-1]
        meta = SampleMetadata(
            window_group="golden",
            window_name=f"window{i}",
            window_bounds=(0, 0, size, size),
            crop_bounds=(0, 0, size, size),
            crop_idx=0,
            num_crops_in_window=1,
            time_range=(win.time_ranges[0][0], win.time_ranges[-1][1]),
            projection=projection,
            dataset_source=None,
        )
        raw = {
            "sentinel2_l2a": RasterImage(
                torch.from_numpy(win.image.astype(np.float32)), list(win.time_ranges)
            )
        }
        input_dict, target_dict = task.process_inputs(raw, metadata=meta, load_targets=False)
        input_dict.update(raw)  # passthrough: true
        input_dict, _ = normalize(input_dict, target_dict)
        normalized.append(input_dict["sentinel2_l2a"].image.numpy().copy())
        inputs.append(input_dict)
        metadatas.append(meta)

    captured: dict[str, Any] = {}
    hooks = [
        olmoearth.model.register_forward_pre_hook(
            _capture_encoder_call(captured), with_kwargs=True
        ),
        olmoearth.register_forward_hook(
            lambda _m, _i, out: captured.update(features=out.feature_maps[0])
        ),
        module.model.decoders[TASK][0].register_forward_hook(
            lambda _m, _i, out: captured.update(logits=out.feature_vector)
        ),
    ]
    try:
        with torch.no_grad():
            output = module(ModelContext(inputs=inputs, metadatas=metadatas))
    finally:
        for h in hooks:
            h.remove()
    probs = torch.stack([o[TASK] for o in output.outputs])
    features = captured["features"].float()
    return {
        "normalized": [summary(n) for n in normalized],
        "encoder_call": captured["call"],
        "probs": floats(probs),
        "logits": floats(captured["logits"]),
        "pooled_max": floats(torch.amax(features, dim=(2, 3))),
        "feature_map": pack(features.numpy()) if full_features else summary(features.numpy()),
        "_normalized_arrays": normalized,
    }


def _capture_encoder_call(captured: dict[str, Any]) -> Callable[..., None]:
    """A forward pre-hook recording what rslearn hands the OlmoEarth encoder."""

    def hook(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0]
        masks = {
            m: sorted({int(v) for v in getattr(sample, f"{m}_mask").unique().tolist()})
            for m in sample.modalities
        }
        captured["call"] = {
            "timestamps": sample.timestamps.tolist(),
            "modalities": {m: list(getattr(sample, m).shape) for m in sample.modalities},
            "mask_values": masks,
            "kwargs": {k: v for k, v in kwargs.items() if isinstance(v, int | bool | float)},
        }

    return hook


def main(argv: list[str] | None = None) -> None:
    """Build the model, run every case in three numeric settings and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)

    rng = np.random.default_rng(SEED)
    cases = {
        "single_timestep_32px": [make_window(rng, 32, [8]), make_window(rng, 32, [8])],
        "three_timesteps_16px": [make_window(rng, 16, [6, 7, 8]), make_window(rng, 16, [6, 7, 8])],
        "ragged_timesteps_16px": [make_window(rng, 16, [6, 7, 8]), make_window(rng, 16, [7, 8])],
    }

    from olmoearth_pretrain.data.normalize import load_computed_config

    stats = load_computed_config()["sentinel2_l2a"]
    with tempfile.TemporaryDirectory() as tmp:
        module, task, fixture_info = build_module(args.fixture, Path(tmp))
        out_cases = []
        for name, windows in cases.items():
            settings = {
                "float32": {"autocast": False, "legacy_timestamps": True, "full_features": True},
                "bfloat16_autocast": {
                    "autocast": True,
                    "legacy_timestamps": True,
                    "full_features": False,
                },
                "float32_real_timestamps": {
                    "autocast": False,
                    "legacy_timestamps": False,
                    "full_features": False,
                },
            }
            results = {k: run_case(module, task, windows, **v) for k, v in settings.items()}
            ref = results["float32"]["_normalized_arrays"]
            for res in results.values():
                for a, b in zip(res.pop("_normalized_arrays"), ref):
                    assert np.array_equal(a, b), "normalization must not depend on the setting"
            out_cases.append(
                {
                    "name": name,
                    "inputs": {
                        "sentinel2_l2a": [
                            {
                                "image": pack(w.image),
                                "layout": "CTHW",
                                "time_ranges": [
                                    [s.isoformat(), e.isoformat()] for s, e in w.time_ranges
                                ],
                            }
                            for w in windows
                        ]
                    },
                    "normalized": results["float32"].pop("normalized"),
                    "outputs": {
                        k: {kk: vv for kk, vv in v.items() if kk != "normalized"}
                        for k, v in results.items()
                    },
                }
            )
            top = np.argmax(np.array(results["float32"]["probs"]), axis=1)
            print(
                f"{name}: float32 probs argmax {top.tolist()}, "
                f"fast_pass={results['float32']['encoder_call']['kwargs'].get('fast_pass')}"
            )

    doc = {
        "description": (__doc__ or "").split("\n\n")[0],
        "regenerate": ".peer/olmoearth-runner/bin/python tests/peer/rslearn_model_golden.py",
        "versions": {
            "python": sys.version.split()[0],
            **{
                p: version(p)
                for p in (
                    "rslearn",
                    "olmoearth-pretrain",
                    "torch",
                    "lightning",
                    "numpy",
                    "olmoearth-runner",
                )
            },
        },
        "fixture": fixture_info,
        "model": {
            "modality": "sentinel2_l2a",
            "bands": BANDS,
            "patch_size": PATCH_SIZE,
            "embedding_size": EMBEDDING_SIZE,
            "task": TASK,
            "classes": CLASSES,
            "encoder_pooling": "mean over timesteps and band sets per modality, mean over "
            "modalities -> [B, 128, H/4, W/4]",
            "decoder": "PoolingDecoder: amax over H, W -> Linear(128, 6); ClassificationHead: "
            "softmax over classes",
            "defaults_in_model_yaml": {"autocast_dtype": "bfloat16", "use_legacy_timestamps": True},
        },
        "normalization": {
            "transform": "rslearn.models.olmoearth_pretrain.norm.OlmoEarthNormalize",
            "formula": "(x - (mean - 2 std)) / ((mean + 2 std) - (mean - 2 std)), float32",
            "stats": {b: {"mean": stats[b]["mean"], "std": stats[b]["std"]} for b in BANDS},
        },
        "seed": SEED,
        "cases": out_cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    reread = json.loads(args.out.read_text())
    for case, windows in zip(reread["cases"], cases.values()):
        for packed, win in zip(case["inputs"]["sentinel2_l2a"], windows):
            assert np.array_equal(unpack(packed["image"]), win.image), "input round trip"
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
