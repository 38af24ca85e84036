"""An rslearn model.yaml read into Helios's own typed specs (the foreign format, at the edge).

rslearn configs are LightningCLI files naming rslearn classes: `model` (an
`RslearnLightningModule` around a `MultiTaskModel` or `SingleTaskModel`: an encoder list and
per-task decoder lists) and `data` (an `RslearnDataModule`: which layers and bands feed each
model input, the task, and the transforms). Only what prediction needs is read, and only the
classes Helios implements are accepted (`SUPPORTED`); any other class raises
`UnsupportedRslearnConfig` naming it.

Templates. Real files carry `${VAR}` (rslearn: environment variables) and olmoearth_run's
`{NAME}` placeholders. Both are filled from `values`, then from the environment; what stays
unfilled is an error only where prediction needs it. The encoder's weights path
(`{CHECKPOINT_PATH}`, `model_path`, `checkpoint_path`, `model_id`) is never needed: the
fine-tune's checkpoint holds every weight and implies the architecture.
`{ENCODER_EMBEDDING_SIZE}` is filled in from the checkpoint by the loader; the patch size
comes from the encoder's `patch_size` or `forward_kwargs.patch_size` (set `PATCH_SIZE` in the
environment where model.yaml leaves it as `{PATCH_SIZE}`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

LIGHTNING_MODULE = "rslearn.train.lightning_module.RslearnLightningModule"
OLMOEARTH = "rslearn.models.olmoearth_pretrain.model.OlmoEarth"
MULTI_TASK, SINGLE_TASK = (
    "rslearn.models.multitask.MultiTaskModel",
    "rslearn.models.singletask.SingleTaskModel",
)
CLASSIFICATION_TASK = "rslearn.train.tasks.classification.ClassificationTask"
SEGMENTATION_TASK = "rslearn.train.tasks.segmentation.SegmentationTask"
MULTI_TASK_TASK = "rslearn.train.tasks.multi_task.MultiTask"
NORMALIZE = "rslearn.models.olmoearth_pretrain.norm.OlmoEarthNormalize"
GEOMETRY_TRANSFORMS = (
    "rslearn.train.transforms.pad.Pad",
    "rslearn.train.transforms.crop.Crop",
    "rslearn.train.transforms.flip.Flip",
)
"""Training-time crops and flips: prediction cuts its own crops, so these are not applied."""
DECODER_CLASSES = (
    "rslearn.models.pooling_decoder.PoolingDecoder",
    "rslearn.models.pooling_decoder.SegmentationPoolingDecoder",
    "rslearn.models.unet.UNetDecoder",
    "rslearn.models.upsample.Upsample",
    "rslearn.models.conv.Conv",
    "rslearn.models.pick_features.PickFeatures",
    "rslearn.train.tasks.classification.ClassificationHead",
    "rslearn.train.tasks.segmentation.SegmentationHead",
)
SUPPORTED = {
    "model": (LIGHTNING_MODULE, MULTI_TASK, SINGLE_TASK),
    "encoder": (OLMOEARTH,),
    "decoders": DECODER_CLASSES,
    "tasks": (CLASSIFICATION_TASK, SEGMENTATION_TASK, MULTI_TASK_TASK),
    "transforms": (NORMALIZE, *GEOMETRY_TRANSFORMS),
}
"""The rslearn classes Helios runs natively, by where they appear in model.yaml."""
_DOLLAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BRACE = re.compile(r"(?<![$\w{])\{([A-Z][A-Z0-9_]*)\}(?!\})")


class UnsupportedRslearnConfig(ValueError):
    """model.yaml uses an rslearn class or option that Helios does not implement."""


@dataclass(frozen=True)
class Component:
    """One `{class_path, init_args}` entry."""

    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EncoderSpec:
    """rslearn's OlmoEarth wrapper, as configured."""

    patch_size: int
    weights_hint: str | None
    """model_path / checkpoint_path / model_id as written (architecture hint only)."""
    token_pooling: bool = True
    use_legacy_timestamps: bool = True
    autocast_dtype: str | None = "bfloat16"
    """Recorded, not applied: Helios runs at the trainer's precision (float32 by default)."""


@dataclass(frozen=True)
class InputSpec:
    """A raster model input (`data.init_args.inputs.<name>`)."""

    name: str
    layers: tuple[tuple[str, int | None], ...]
    """(layer, item group or None) as listed: `sentinel2`, `sentinel2.1`, ..."""
    bands: tuple[str, ...]
    load_all_layers: bool = False
    load_all_item_groups: bool = False
    required: bool = True


@dataclass(frozen=True)
class NormalizeSpec:
    """OlmoEarthNormalize: the channel order of each normalized input and the std multiple."""

    band_names: dict[str, tuple[str, ...]]
    std_multiplier: float = 2.0


@dataclass(frozen=True)
class TaskSpec:
    """The task whose decoder makes the model's output."""

    name: str
    kind: Literal["classification", "segmentation"]
    num_classes: int
    class_names: tuple[str, ...] = ()
    prob_scales: tuple[float, ...] | None = None
    property_name: str = "label"


@dataclass(frozen=True)
class RslearnConfig:
    """What prediction needs from an rslearn model.yaml."""

    encoder: EncoderSpec
    decoder: tuple[Component, ...]
    task: TaskSpec
    multi_task: bool
    """MultiTaskModel (`decoders.<task>`) or SingleTaskModel (`decoder`): the state-dict layout."""
    inputs: dict[str, InputSpec]
    normalize: NormalizeSpec | None
    skipped_transforms: tuple[str, ...] = ()


def is_rslearn_model_yaml(path: str | Path) -> bool:
    """Whether a model.yaml names an rslearn Lightning module (not a Helios RunnerModel)."""
    try:
        raw = yaml.safe_load(fill_templates(Path(path).read_text(), {}))
    except yaml.YAMLError:
        return False
    model = raw.get("model") if isinstance(raw, dict) else None
    return isinstance(model, dict) and str(model.get("class_path", "")).startswith("rslearn.")


def fill_templates(text: str, values: Mapping[str, str]) -> str:
    """Replace `${VAR}` and `{NAME}` by `values`, then by the environment; leave the rest."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        found = values.get(name, os.environ.get(name))
        return match.group(0) if found is None else str(found)

    return _BRACE.sub(sub, _DOLLAR.sub(sub, text))


def read_config(path: str | Path, values: Mapping[str, str] | None = None) -> RslearnConfig:
    """Parse an rslearn model.yaml (templates filled from `values` and the environment).

    Raises:
        UnsupportedRslearnConfig: a class or option Helios does not implement (named).
        ValueError: the file is not an rslearn model config, or a needed value is missing.

    """
    where = str(path)
    raw = yaml.safe_load(fill_templates(Path(path).read_text(), values or {})) or {}
    module = _component(raw.get("model"), f"{where}: model")
    _require(module.class_path, (LIGHTNING_MODULE,), f"{where}: model")
    net = _component(module.init_args.get("model"), f"{where}: model.init_args.model")
    _require(net.class_path, (MULTI_TASK, SINGLE_TASK), f"{where}: model.init_args.model")
    args = net.init_args
    encoders = [_component(e, f"{where}: encoder") for e in args.get("encoder") or []]
    if len(encoders) != 1:
        names = [e.class_path for e in encoders]
        raise UnsupportedRslearnConfig(f"{where}: one encoder is supported, got {names}")
    _require(encoders[0].class_path, (OLMOEARTH,), f"{where}: encoder")
    data = (raw.get("data") or {}).get("init_args") or {}
    tasks = _tasks(data.get("task"), where)
    multi = net.class_path == MULTI_TASK
    decoders = args.get("decoders") if multi else {tasks[0].name: args.get("decoder")}
    if not isinstance(decoders, dict) or len(decoders) != 1:
        raise UnsupportedRslearnConfig(
            f"{where}: Helios writes one output per window, so one task with a decoder is "
            f"supported; model.yaml has {sorted(decoders or {})}"
        )
    ((task_name, chain),) = decoders.items()
    task = next((t for t in tasks if t.name == task_name), None)
    if task is None:
        raise ValueError(f"{where}: decoder task {task_name!r} is not in data's tasks")
    decoder = tuple(_component(c, f"{where}: decoders.{task_name}") for c in chain or [])
    for c in decoder:
        _require(c.class_path, DECODER_CLASSES, f"{where}: decoders.{task_name}")
    normalize, skipped = _transforms(data, where)
    return RslearnConfig(
        encoder=_encoder(encoders[0], where),
        decoder=decoder,
        task=task,
        multi_task=multi,
        inputs=_inputs(data.get("inputs") or {}, where),
        normalize=normalize,
        skipped_transforms=skipped,
    )


def _component(entry: Any, where: str) -> Component:
    if not isinstance(entry, dict) or "class_path" not in entry:
        raise ValueError(f"{where}: expected {{class_path, init_args}}, got {entry!r}")
    init_args = entry.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ValueError(f"{where}: init_args must be a mapping")
    return Component(str(entry["class_path"]), dict(init_args))


def _require(class_path: str, allowed: tuple[str, ...], where: str) -> None:
    if class_path not in allowed:
        raise UnsupportedRslearnConfig(
            f"{where}: {class_path} is not supported by Helios; supported: {list(allowed)}"
        )


def _int(value: Any, where: str, template: str) -> int | None:
    """An int, None when absent, and a clear error for an unfilled template."""
    if value is None:
        return None
    if isinstance(value, dict) and len(value) == 1 and next(iter(value.values())) is None:
        name = next(iter(value))
        raise ValueError(
            f"{where} is the unfilled template {{{name}}}: write the number into model.yaml or "
            f"set {name} in the environment (e.g. {name}={template} helios run predict ...)"
        )
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    return value


def _encoder(enc: Component, where: str) -> EncoderSpec:
    args = enc.init_args
    fwd = dict(args.get("forward_kwargs") or {})
    patch = _int(args.get("patch_size"), f"{where}: encoder patch_size", "4")
    fwd_patch = _int(fwd.pop("patch_size", None), f"{where}: forward_kwargs.patch_size", "4")
    if fwd:
        raise UnsupportedRslearnConfig(f"{where}: encoder forward_kwargs {sorted(fwd)}")
    if args.get("selector", ["encoder"]) != ["encoder"]:
        raise UnsupportedRslearnConfig(f"{where}: encoder selector {args['selector']}")
    size = fwd_patch if fwd_patch is not None else patch
    if size is None:
        raise ValueError(f"{where}: the OlmoEarth encoder has no patch_size")
    if args.get("token_pooling", True) is not True:
        raise UnsupportedRslearnConfig(f"{where}: token_pooling: false (token feature maps)")
    hint = next(
        (args[k] for k in ("model_path", "checkpoint_path", "model_id") if args.get(k)), None
    )
    return EncoderSpec(
        patch_size=size,
        weights_hint=None if hint is None else str(hint),
        use_legacy_timestamps=bool(args.get("use_legacy_timestamps", True)),
        autocast_dtype=args.get("autocast_dtype", "bfloat16"),
    )


def _tasks(entry: Any, where: str) -> list[TaskSpec]:
    task = _component(entry, f"{where}: data.init_args.task")
    _require(task.class_path, SUPPORTED["tasks"], f"{where}: task")
    if task.class_path != MULTI_TASK_TASK:
        return [_task("", task, where)]
    subtasks = task.init_args.get("tasks") or {}
    out = []
    for name, sub in subtasks.items():
        spec = _component(sub, f"{where}: task {name}")
        if spec.class_path in (CLASSIFICATION_TASK, SEGMENTATION_TASK):
            out.append(_task(str(name), spec, where))
        else:
            out.append(TaskSpec(str(name), "classification", 0))  # refused if it has a decoder
    return out


def _task(name: str, task: Component, where: str) -> TaskSpec:
    args = task.init_args
    if task.class_path == CLASSIFICATION_TASK:
        classes = tuple(str(c) for c in args.get("classes") or [])
        if len(classes) < 2:
            raise ValueError(f"{where}: task {name}: ClassificationTask needs classes")
        prop = str(args.get("property_name") or "label")
        return TaskSpec(name, "classification", len(classes), classes, property_name=prop)
    if task.class_path != SEGMENTATION_TASK:
        raise UnsupportedRslearnConfig(f"{where}: task {name}: {task.class_path} is not supported")
    num = _int(args.get("num_classes"), f"{where}: task {name} num_classes", "2")
    if num is None or num < 2:
        raise ValueError(f"{where}: task {name}: SegmentationTask needs num_classes >= 2")
    for option in ("output_probs", "output_class_idx"):
        if args.get(option):
            raise UnsupportedRslearnConfig(f"{where}: task {name}: {option}")
    scales = args.get("prob_scales")
    return TaskSpec(
        name, "segmentation", num, prob_scales=None if scales is None else tuple(map(float, scales))
    )


def _inputs(entries: dict[str, Any], where: str) -> dict[str, InputSpec]:
    out = {}
    for name, entry in entries.items():
        args = entry.get("init_args", {}) if "class_path" in entry else entry
        if args.get("is_target") or args.get("data_type", "raster") != "raster":
            continue
        for option in ("resolution_factor", "passthrough_only"):
            if args.get(option, 1 if option == "resolution_factor" else None) not in (1, None):
                raise UnsupportedRslearnConfig(f"{where}: input {name}: {option}")
        layers = []
        for text in args.get("layers") or []:
            layer, _, group = str(text).partition(".")
            layers.append((layer, int(group) if group else None))
        if not layers or not args.get("bands"):
            raise ValueError(f"{where}: input {name} needs layers and bands")
        out[str(name)] = InputSpec(
            name=str(name),
            layers=tuple(layers),
            bands=tuple(str(b) for b in args["bands"]),
            load_all_layers=bool(args.get("load_all_layers", False)),
            load_all_item_groups=bool(args.get("load_all_item_groups", False)),
            required=bool(args.get("required", True)),
        )
    return out


def _transforms(data: dict[str, Any], where: str) -> tuple[NormalizeSpec | None, tuple[str, ...]]:
    """The prediction transforms (predict_config's, else default_config's)."""
    section = (data.get("predict_config") or {}).get("transforms")
    if section is None:
        section = (data.get("default_config") or {}).get("transforms") or []
    normalize, skipped = None, []
    for entry in section:
        t = _component(entry, f"{where}: transforms")
        _require(t.class_path, SUPPORTED["transforms"], f"{where}: transforms")
        if t.class_path != NORMALIZE:
            skipped.append(t.class_path)
            continue
        if t.init_args.get("config_fname"):
            raise UnsupportedRslearnConfig(f"{where}: OlmoEarthNormalize config_fname")
        bands = {
            str(m): tuple(map(str, b)) for m, b in (t.init_args.get("band_names") or {}).items()
        }
        normalize = NormalizeSpec(bands, float(t.init_args.get("std_multiplier") or 2.0))
    return normalize, tuple(skipped)
