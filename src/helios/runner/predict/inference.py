"""Inference: run a project's model over the built windows of a partition.

The model is `checkpoint.ckpt` read by `RunnerModel.load_for_inference` (its normalization,
patch size and modalities travel in the checkpoint), with `model.yaml`'s `init_args`
overriding hyperparameters; a model.yaml naming rslearn's Lightning module is an rslearn
fine-tune instead, run natively by `helios.runner.predict.rslearn_model.RslearnModel` on
the inputs its model.yaml names (same crops, blending and outputs).

Windows are cut into square crops of `crop_size` pixels (a
multiple of the patch size) that overlap by `overlap` pixels (`helios.runner.predict.crops`); each
crop is normalized and tokenized like every labelled sample (`helios.data.batching.LabeledCollate`)
and batched through Lightning's predict loop. `WindowWriter`, a prediction-writer
callback, adds each crop's output into its window with `taper_weights` feathering
(sum(w * p) / sum(w), so no seams) and writes the window's outputs once its last crop
arrives. Windows are sharded across
ranks whole, so several GPUs (`devices > 1`, DDP spawn) each finish their own windows.

What each window gets (`outputs/`):

- segmentation: `<name>.tif`, uint8 class ids (argmax of the blended probabilities) on the
  10 m grid, 255 where no crop had data; optionally `<name>_probabilities.tif` (float32).
- classification: one class per window (mean probability over its crops): a constant
  `<name>.tif` (RASTER results) or `<name>.geojson` with the window footprint (VECTOR).
- embedding: `<name>.tif`, float32 [D, h, w] at token resolution (one pixel per patch, patch
  size x 10 m), NaN where a patch had no data. Windows whose side is not a multiple of the
  patch size are covered by whole patches (the raster reaches past the window by < 1 patch);
  grid windows whose size and overlap are multiples of the patch size mosaic exactly.

`<name>` is dataset.json's first layer without a data source (e.g. "output"), else "output".
`outputs/.inference.json` (written last) records the model and settings; windows whose
record matches are skipped, so the step can be killed and re-run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from helios.runner.core.fsutil import read_json, text_hash, write_json
from helios.runner.core.rasters import taper_weights
from helios.runner.core.windows import Window, list_windows
from helios.runner.materialize.dataset_config import DatasetConfig
from helios.runner.materialize.window import is_built
from helios.runner.predict.crops import (
    CropBlender,
    CropDataModule,
    CropDataset,
    WindowPlan,
    plan_window,
    ref_size,
)
from helios.runner.predict.model import RunnerModel
from helios.runner.predict.outputs import write_window_geojson, write_window_output
from helios.runner.predict.results import InferenceResultsConfig
from helios.runner.predict.rslearn_model import (
    RslearnCropDataModule,
    RslearnModel,
    is_rslearn_model_yaml,
)

logger = logging.getLogger(__name__)
PredictModel = RunnerModel | RslearnModel
"""What inference runs: a Helios model, or an rslearn fine-tune read from its model.yaml."""
MARKER = ".inference.json"
CROP_TOKENS = 32
"""Largest default crop side in patches (32: 128 px at patch size 4, 256 px at 8). Crops
default to the largest window's side up to this, so a window is usually one crop: fewer
crop edges (the encoder's positions restart in every crop) and no repeated pixels."""
CLASS_NODATA = 255


@dataclass(frozen=True)
class OutputPlan:
    """What inference writes for each window."""

    name: str
    task: Literal["segmentation", "classification", "embedding"]
    vector: bool = False
    probabilities: bool = False
    class_names: dict[int, str] = field(default_factory=dict)
    colormap: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    property_name: str = "label"

    def files(self) -> list[str]:
        """Output file names of one window."""
        if self.task == "classification" and self.vector:
            return [f"{self.name}.geojson"]
        extra = [f"{self.name}_probabilities.tif"] if self.probabilities else []
        return [f"{self.name}.tif", *extra]


@dataclass
class InferenceResult:
    """What `run_inference` did for one partition."""

    partition_id: str
    windows: int
    predicted: int
    already_done: int
    not_built: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the CLI."""
        return (
            f"{self.partition_id}: predicted {self.predicted} windows ({self.already_done} "
            f"already done, {len(self.not_built)} not built, of {self.windows}) "
            f"in {self.seconds:.1f} s"
        )


def output_plan(
    dataset_config: DatasetConfig,
    results: InferenceResultsConfig | None,
    model: PredictModel,
    probabilities: bool = False,
) -> OutputPlan:
    """Output name, kind, class names and colours for a project's configs and its model."""
    name = next((la.name for la in dataset_config.layers.values() if not la.is_input), "")
    classes = results.class_names() if results else {}
    if not classes and model.hparams.get("class_names"):
        classes = dict(enumerate(model.hparams["class_names"]))
    fields = (results.classification_fields or []) if results else []
    return OutputPlan(
        name=name or "output",
        task=model.kind,
        vector=bool(results and results.data_type == "VECTOR"),
        probabilities=probabilities and model.kind == "segmentation",
        class_names=classes,
        colormap=results.colormap() if results else {},
        property_name=fields[0].property_name if fields else "label",
    )


class WindowWriter(BasePredictionWriter):
    """Blends crop predictions per window and writes each window when its last crop lands."""

    def __init__(
        self, plans: list[WindowPlan], outputs: OutputPlan, fingerprint: str, overlap: int
    ) -> None:
        """Args: the plans predicted; what to write; the run's fingerprint; crop overlap."""
        super().__init__(write_interval="batch")
        self.plans = plans
        self.outputs = outputs
        self.fingerprint = fingerprint
        self.overlap = overlap
        self.written: list[str] = []
        self._open: dict[int, CropBlender] = {}

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Accumulate a batch; write finished windows."""
        ids, out, valid = (t.detach().cpu().numpy() for t in prediction)
        dm = trainer.datamodule  # type: ignore[attr-defined]
        dataset: CropDataset = dm.dataset
        patch = int(pl_module.patch_size)  # type: ignore[arg-type]
        for item, crop_out, ok in zip(ids, out, valid):
            index, r, c = dataset.items[int(item)]
            plan = dataset.plans[index]
            acc = self._open.get(index)
            if acc is None:
                scale = {"segmentation": 1, "embedding": patch}.get(self.outputs.task, 0)
                acc = CropBlender(plan, crop_out.shape[0], scale, len(plan.offsets))
                self._open[index] = acc
            side = crop_out.shape[-1]
            blend = max(1, self.overlap // max(1, acc.scale))
            taper = taper_weights(side, side, blend) if acc.scale else np.ones(())
            acc.add(r, c, crop_out, ok, taper)
            if acc.remaining == 0:
                self._write(plan, self._open.pop(index).result(), patch)

    def _write(self, plan: WindowPlan, result: np.ndarray, patch: int) -> None:
        o, window = self.outputs, plan.window
        if o.task == "segmentation":
            probs = result[:, : plan.height, : plan.width]
            nodata = np.isnan(probs).any(0)
            classes = np.where(nodata, CLASS_NODATA, np.nan_to_num(probs).argmax(0))
            write_window_output(
                window,
                o.name,
                classes.astype(np.uint8),
                kind="classification",
                class_names=o.class_names or None,
                colormap=o.colormap or None,
                nodata=CLASS_NODATA,
            )
            if o.probabilities:
                names = [o.class_names.get(k, str(k)) for k in range(probs.shape[0])]
                write_window_output(
                    window, f"{o.name}_probabilities", probs, kind="probabilities",
                    band_names=names,
                )  # fmt: skip
        elif o.task == "embedding":
            h, w = math.ceil(plan.height / patch), math.ceil(plan.width / patch)
            x0, y0, x1, y1 = window.bounds
            sx, sy = (x1 - x0) / plan.width * patch, (y1 - y0) / plan.height * patch
            cover = (x0, y1 - h * sy, x0 + w * sx, y1)
            write_window_output(window, o.name, result[:, :h, :w], kind="regression", bounds=cover)
        else:
            self._write_class(window, result)
        write_json(window.outputs_dir / MARKER, {"fingerprint": self.fingerprint, **_files(o)})
        self.written.append(window.name)

    def _write_class(self, window: Window, probs: np.ndarray) -> None:
        o = self.outputs
        ok = bool(np.isfinite(probs).all())
        value = int(probs.argmax()) if ok else CLASS_NODATA
        if o.vector:
            from shapely.geometry import box, mapping

            props: dict[str, Any] = {o.property_name: value if ok else None}
            if ok:
                props.update(probability=float(probs.max()), label=o.class_names.get(value))
            feature = {
                "type": "Feature",
                "geometry": mapping(box(*window.bounds)),
                "properties": props,
            }
            write_window_geojson(window, o.name, [feature], crs=window.crs)
        else:
            grid = np.full((window.height, window.width), value, dtype=np.uint8)
            write_window_output(
                window, o.name, grid, kind="classification", nodata=CLASS_NODATA,
                class_names=o.class_names or None, colormap=o.colormap or None,
            )  # fmt: skip


def _files(outputs: OutputPlan) -> dict[str, Any]:
    return {"outputs": outputs.files()}


@lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def inference_fingerprint(
    checkpoint: Path, model_yaml: Path | None, settings: dict[str, Any]
) -> str:
    """Hash of the checkpoint's bytes, model.yaml and the inference settings."""
    ckpt = Path(checkpoint)
    st = ckpt.stat()
    yaml_text = model_yaml.read_text() if model_yaml is not None and model_yaml.exists() else ""
    return text_hash(_file_sha256(str(ckpt), st.st_size, st.st_mtime_ns), yaml_text, settings)


def is_predicted(window: Window, fingerprint: str) -> bool:
    """Whether a window's outputs were written by this model and settings."""
    marker = window.outputs_dir / MARKER
    if not marker.exists():
        return False
    record = read_json(marker)
    return record.get("fingerprint") == fingerprint and all(
        (window.outputs_dir / f).exists() for f in record.get("outputs", [])
    )


def load_model(checkpoint: Path, model_yaml: Path | None = None) -> PredictModel:
    """A project's model: checkpoint.ckpt, with model.yaml's init_args (if present).

    A model.yaml naming rslearn's Lightning module makes it an rslearn fine-tune.
    """
    has_yaml = model_yaml is not None and model_yaml.exists()
    if model_yaml is not None and has_yaml and is_rslearn_model_yaml(model_yaml):
        return RslearnModel.load(model_yaml, checkpoint)
    return RunnerModel.load_for_inference(checkpoint, model_yaml if has_yaml else None)


def run_inference(
    scratch: Path,
    partition_id: str,
    *,
    dataset_config: DatasetConfig,
    results_config: InferenceResultsConfig | None,
    checkpoint: Path,
    model_yaml: Path | None = None,
    batch_size: int = 8,
    device: str = "auto",
    devices: int = 1,
    crop_size: int | None = None,
    overlap: int | None = None,
    probabilities: bool = False,
    num_workers: int = 0,
    precision: str = "32-true",
    progress: bool = True,
    model: PredictModel | None = None,
) -> InferenceResult:
    """Predict every built window of a partition that has no current outputs.

    Args:
        scratch: The scratch directory.
        partition_id: The partition to predict.
        dataset_config: The project's dataset.json (which layers are inputs, the output name).
        results_config: olmoearth_run.yaml's `inference_results_config` (class names, ...).
        checkpoint: The model checkpoint (checkpoint.ckpt).
        model_yaml: The project's model.yaml, whose init_args override the checkpoint's.
        batch_size: Crops per batch.
        device: Lightning accelerator: "auto", "cpu", "gpu", "cuda", "mps".
        devices: Devices to use; more than one runs DDP (spawned processes).
        crop_size: Crop side in 10 m pixels, rounded up to a multiple of the patch size
            (default: the largest window's side, at most 32 patches).
        overlap: Overlap of neighbouring crops in pixels, rounded to a multiple of the patch
            size (default: a quarter of the crop).
        probabilities: Also write per-class probabilities (segmentation).
        num_workers: DataLoader workers reading window inputs.
        precision: Lightning precision, e.g. "bf16-mixed" on GPUs.
        progress: Show a progress bar.
        model: Use this model instead of loading the project's (tests, notebooks).

    """
    start = time.monotonic()
    scratch = Path(scratch)
    settings = {"crop": crop_size, "overlap": overlap, "probabilities": probabilities}
    fingerprint = inference_fingerprint(checkpoint, model_yaml, settings)
    windows = list_windows(scratch, partition_id)
    config_fp = dataset_config.fingerprint()
    built = [w for w in windows if is_built(w, config_fp)]
    not_built = [w.name for w in windows if w not in built]
    todo = [w for w in built if not is_predicted(w, fingerprint)]
    result = InferenceResult(partition_id, len(windows), 0, len(built) - len(todo), not_built)
    if not_built:
        logger.warning("%s: %d windows are not built", partition_id, len(not_built))
    if todo:
        model = model if model is not None else load_model(checkpoint, model_yaml)
        _check_modalities(dataset_config, model)
        patch = model.patch_size
        sides = [max(ref_size(w)) for w in todo]
        crop = _round_up(crop_size or min(CROP_TOKENS * patch, max(sides)), patch)
        over = min(crop - patch, _round_up(overlap if overlap is not None else crop // 4, patch))
        plans = [plan_window(w, crop, over, patch) for w in todo]
        outputs = output_plan(dataset_config, results_config, model, probabilities)
        writer = WindowWriter(plans, outputs, fingerprint, over)
        with _quiet_lightning():
            trainer = _trainer(device, devices, precision, writer, progress, scratch)
        dm: L.LightningDataModule
        if isinstance(model, RslearnModel):  # reads the layers its model.yaml names
            dm = RslearnCropDataModule(
                plans, dataset_config, model.config, crop, batch_size, num_workers
            )
        else:
            dm = CropDataModule(plans, dataset_config, model, crop, batch_size, num_workers)
        with _quiet_lightning():
            trainer.predict(model, datamodule=dm, return_predictions=False)
        result.predicted = sum(is_predicted(w, fingerprint) for w in todo)
    result.seconds = time.monotonic() - start
    return result


def _trainer(
    device: str,
    devices: int,
    precision: str,
    writer: WindowWriter,
    progress: bool,
    root: Path,
) -> L.Trainer:
    return L.Trainer(
        accelerator=device,
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        precision=precision,  # type: ignore[arg-type]
        logger=False,
        callbacks=[writer],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,  # CropDataModule shards whole windows by rank
        default_root_dir=str(root),
    )


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's start-up chatter (accelerator lines, tips) and a harmless warning."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*overridden `transfer_batch_to_device`.*")
        warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, math.ceil(value / multiple) * multiple)


def _check_modalities(dataset_config: DatasetConfig, model: PredictModel) -> None:
    layers = {la.spec.name for la in dataset_config.input_layers()}
    if not layers & set(model.modalities):
        raise ValueError(
            f"dataset.json provides modalities {sorted(layers)}, none of which the model "
            f"reads ({model.modalities}); name a layer's `modality` after one of them"
        )
