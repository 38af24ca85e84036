"""Sweep grids: a YAML of models x tasks x protocols x settings -> concrete eval runs.

```yaml
name: demo
output: sweeps/demo              # run folders, configs and commands go here
models:
  - {kind: helios, path: runs/latent_mim_demo/encoder.pt, name: helios-demo}
  - {kind: galileo, path: tests/fixtures/galileo_nano, name: galileo-nano, optional: true}
  - {class_path: my_pkg.MyLoader, init_args: {path: weights.pt}}   # an EncoderLoader of yours
tasks:
  - {name: demo-cloud-tiles, root: demo_data, protocols: [knn, linear_probe]}
  - {class_path: my_pkg.MyBenchmark, init_args: {root: data}, protocols: [knn]}
grid:                            # every combination is one run
  lr: [0.001, 0.01]
  normalization: [model, dataset]
  pooling: [mean, max]
defaults: {lr: 0.01, normalization: model, pooling: mean}   # --defaults-only
settings: {epochs: 20, batch_size: 32}                      # the same for every run
```

Models and tasks are written as in an eval config: the short form, or `{class_path,
init_args}`; protocols by short name or import path. A model marked `optional: true` is left
out (with a notice) when its weights are not on disk. Settings a protocol ignores
(`EvalProtocol.ignores`) are dropped before expanding (kNN has no learning rate), so no run is
repeated. Every model, task and protocol is checked against its class when the file is read.
Run ids are readable and stable: the same grid always yields the same ids, config files and
commands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helios.evals.components import ClassSpec, ComponentError
from helios.evals.models import ModelSpec, encoder_loader, model_label, model_spec
from helios.evals.run import EvalConfig, config_dict, eval_protocol
from helios.evals.tasks import TaskConfig, task_factory

GRID_KEYS = (
    "lr",
    "normalization",
    "norm_method",
    "pooling",
    "label_fraction",
    "patch_size",
    "k",
    "seed",
)
_SETTING_FIELDS = {f.name for f in dataclasses.fields(EvalConfig)} - {
    "model",
    "task",
    "protocol",
    "output",
}


class SweepError(ValueError):
    """A sweep file that cannot be expanded."""


@dataclass
class SweepRun:
    """One expanded run."""

    run_id: str
    config: EvalConfig
    config_path: Path
    command: list[str]

    @property
    def shell(self) -> str:
        """The command as a shell-safe string."""
        return shlex.join(self.command)

    @property
    def inline(self) -> str:
        """The run's config as one line of JSON (`helios eval run --config` takes it inline)."""
        return json.dumps(config_dict(self.config))


@dataclass
class Sweep:
    """A parsed sweep file."""

    name: str
    output: Path
    models: list[ModelSpec | ClassSpec]
    tasks: list[tuple[TaskConfig | ClassSpec, list[str]]]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    skipped_models: list[str] = field(default_factory=list)
    """Optional models left out because their weights are absent."""

    @classmethod
    def load(cls, path: Path | str) -> Sweep:
        """Read and validate a sweep YAML; errors name the file and the key."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such sweep file")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise SweepError(f"{path}: expected a mapping at the top level")
        unknown = set(raw) - {"name", "output", "models", "tasks", "grid", "defaults", "settings"}
        if unknown:
            raise SweepError(f"{path}: unknown keys {sorted(unknown)}")
        models, skipped = _models(raw.get("models") or [], path)
        tasks = [
            _task(dict(t), f"{path}: tasks[{i}]") for i, t in enumerate(raw.get("tasks") or [])
        ]
        if not models or not tasks:
            raise SweepError(f"{path}: a sweep needs at least one model and one task")
        grid = {
            k: list(v) if isinstance(v, list) else [v] for k, v in (raw.get("grid") or {}).items()
        }
        for section, keys in (
            ("grid", grid),
            ("defaults", raw.get("defaults") or {}),
            ("settings", raw.get("settings") or {}),
        ):
            unknown_settings = set(keys) - _SETTING_FIELDS
            if unknown_settings:
                raise SweepError(
                    f"{path}: {section}: unknown settings {sorted(unknown_settings)}; "
                    f"known: {sorted(_SETTING_FIELDS)}"
                )
        _check_components(models, tasks, path)
        return cls(
            skipped_models=skipped,
            name=str(raw.get("name") or path.stem),
            output=Path(raw.get("output") or Path("sweeps") / path.stem),
            models=models,
            tasks=tasks,
            grid=grid,
            defaults=dict(raw.get("defaults") or {}),
            settings=dict(raw.get("settings") or {}),
        )

    def expand(self, defaults_only: bool = False) -> list[SweepRun]:
        """Every run of the sweep (one per task and protocol with `defaults_only`)."""
        runs: list[SweepRun] = []
        seen: set[str] = set()
        for model in self.models:
            for task, protocols in self.tasks:
                for protocol in protocols:
                    ignored = _ignored(protocol)
                    for combo in self._combos(ignored, defaults_only):
                        settings = {**self.settings, **combo}
                        settings = {k: v for k, v in settings.items() if k not in ignored}
                        run_id = _run_id(model, task, protocol, combo)
                        if run_id in seen:
                            continue
                        seen.add(run_id)
                        folder = self.output / "runs" / run_id
                        config = EvalConfig(
                            model=model,
                            task=task,
                            protocol=protocol,
                            output=str(folder),
                            **settings,
                        )
                        path = folder / "config.yaml"
                        command = ["helios", "eval", "run", "--config", str(path), "--no-progress"]
                        runs.append(SweepRun(run_id, config, path, command))
        return runs

    def _combos(self, ignored: frozenset[str], defaults_only: bool) -> list[dict[str, Any]]:
        keys = [k for k in self.grid if k not in ignored]
        if defaults_only:
            return [{k: self.defaults.get(k, self.grid[k][0]) for k in keys}]
        return [
            dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))
        ]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "-", text).strip("-")[:60]


def _models(entries: list[Any], path: Path) -> tuple[list[ModelSpec | ClassSpec], list[str]]:
    """The models of a sweep file, and the labels of optional ones without weights."""
    models: list[ModelSpec | ClassSpec] = []
    skipped = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        optional = bool(entry.pop("optional", False))
        try:
            model = ClassSpec(**entry) if "class_path" in entry else ModelSpec(**entry)
        except TypeError as err:
            raise SweepError(f"{path}: models[{i}]: {err}") from None
        weights = str(model_spec(model).init_args.get("path") or "")
        if optional and weights and not Path(weights).exists():
            skipped.append(f"{model_label(model)} ({weights} not found)")
            continue
        models.append(model)
    return models, skipped


def _task(entry: dict[str, Any], where: str) -> tuple[TaskConfig | ClassSpec, list[str]]:
    """One task of a sweep file and its protocols."""
    protocols = [str(p) for p in entry.pop("protocols", ["knn"])]
    try:
        task = ClassSpec(**entry) if "class_path" in entry else TaskConfig(**entry)
    except TypeError as err:
        raise SweepError(f"{where}: {err}") from None
    for protocol in protocols:
        try:
            eval_protocol(protocol, where)
        except ComponentError as err:
            raise SweepError(str(err)) from None
    return task, protocols


def _check_components(
    models: list[ModelSpec | ClassSpec],
    tasks: list[tuple[TaskConfig | ClassSpec, list[str]]],
    path: Path,
) -> None:
    """Build every model loader and task opener once (init args checked, nothing read)."""
    try:
        for i, model in enumerate(models):
            encoder_loader(model, f"{path}: models[{i}]")
        for i, (task, _) in enumerate(tasks):
            task_factory(task, f"{path}: tasks[{i}]")
    except ComponentError as err:
        raise SweepError(str(err)) from None


def _ignored(protocol: str) -> frozenset[str]:
    """The settings `protocol` does not read."""
    return eval_protocol(protocol).ignores


def _run_id(
    model: ModelSpec | ClassSpec, task: TaskConfig | ClassSpec, protocol: str, combo: dict[str, Any]
) -> str:
    model_part = (model.name or model.kind) if isinstance(model, ModelSpec) else model.name
    parts = [_slug(model_part), _slug(task.name), _slug(protocol.rpartition(".")[2])]
    parts += [_slug(f"{k}={v}") for k, v in sorted(combo.items())]
    digest = hashlib.sha1(
        json.dumps(
            [dataclasses.asdict(model), dataclasses.asdict(task), protocol, combo],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:8]
    return "__".join(parts + [digest])


def write_run_configs(runs: list[SweepRun], sweep: Sweep) -> Path:
    """Write each run's config.yaml and a `commands.sh`; returns the commands file."""
    for run in runs:
        run.config_path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(config_dict(run.config), sort_keys=False)
        tmp = run.config_path.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        tmp.replace(run.config_path)
    sweep.output.mkdir(parents=True, exist_ok=True)
    commands = sweep.output / "commands.sh"
    commands.write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\n" + "".join(r.shell + "\n" for r in runs)
    )
    return commands
