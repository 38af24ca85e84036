"""Sweep grids: a YAML of models x tasks x protocols x settings -> concrete eval runs.

```yaml
name: demo
output: sweeps/demo              # run folders, configs and commands go here
models:
  - {kind: helios, path: runs/latent_mim_demo/encoder.pt, name: helios-demo}
  - {kind: galileo, path: ../shared/fixtures/galileo_nano, name: galileo-nano, optional: true}
tasks:
  - {name: demo-cloud-tiles, root: demo_data, protocols: [knn, linear_probe]}
grid:                            # every combination is one run
  lr: [0.001, 0.01]
  normalization: [model, dataset]
  pooling: [mean, max]
defaults: {lr: 0.01, normalization: model, pooling: mean}   # --defaults-only
settings: {epochs: 20, batch_size: 32}                      # the same for every run
```

A model marked `optional: true` is left out (with a notice) when its weights are not on disk.
Settings a protocol ignores are dropped before expanding (kNN has no learning rate), so no
run is repeated. Run ids are readable and stable: the same grid always yields the same ids,
config files and commands.
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

from helios.evals.run import EvalConfig, ModelSpec, TaskConfig

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
_UNUSED = {"knn": {"lr", "epochs"}, "linear_probe": {"k"}, "finetune": {"k"}}
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
        return json.dumps(dataclasses.asdict(self.config), default=str)


@dataclass
class Sweep:
    """A parsed sweep file."""

    name: str
    output: Path
    models: list[ModelSpec]
    tasks: list[tuple[TaskConfig, list[str]]]
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
        models, skipped = [], []
        for i, m in enumerate(raw.get("models") or []):
            m = dict(m)
            optional = bool(m.pop("optional", False))
            try:
                spec = ModelSpec(**m)
            except TypeError as err:
                raise SweepError(f"{path}: models[{i}]: {err}") from None
            if optional and spec.path and not Path(spec.path).exists():
                skipped.append(f"{spec.label} ({spec.path} not found)")
                continue
            models.append(spec)
        tasks = []
        for i, t in enumerate(raw.get("tasks") or []):
            t = dict(t)
            protocols = list(t.pop("protocols", ["knn"]))
            bad = [p for p in protocols if p not in _UNUSED]
            if bad:
                raise SweepError(
                    f"{path}: tasks[{i}]: unknown protocols {bad}; use {sorted(_UNUSED)}"
                )
            try:
                tasks.append((TaskConfig(**t), protocols))
            except TypeError as err:
                raise SweepError(f"{path}: tasks[{i}]: {err}") from None
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
                    for combo in self._combos(protocol, defaults_only):
                        settings = {**self.settings, **combo}
                        settings = {k: v for k, v in settings.items() if k not in _UNUSED[protocol]}
                        run_id = _run_id(model, task, protocol, combo)
                        if run_id in seen:
                            continue
                        seen.add(run_id)
                        folder = self.output / "runs" / run_id
                        config = EvalConfig(
                            model=model,
                            task=task,
                            protocol=protocol,  # type: ignore[arg-type]
                            output=str(folder),
                            **settings,
                        )
                        path = folder / "config.yaml"
                        command = ["helios", "eval", "run", "--config", str(path), "--no-progress"]
                        runs.append(SweepRun(run_id, config, path, command))
        return runs

    def _combos(self, protocol: str, defaults_only: bool) -> list[dict[str, Any]]:
        keys = [k for k in self.grid if k not in _UNUSED[protocol]]
        if defaults_only:
            return [{k: self.defaults.get(k, self.grid[k][0]) for k in keys}]
        return [
            dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))
        ]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "-", text).strip("-")[:60]


def _run_id(model: ModelSpec, task: TaskConfig, protocol: str, combo: dict[str, Any]) -> str:
    parts = [_slug(model.name or model.kind), _slug(task.name), protocol]
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
        text = yaml.safe_dump(
            json.loads(json.dumps(dataclasses.asdict(run.config), default=str)), sort_keys=False
        )
        tmp = run.config_path.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        tmp.replace(run.config_path)
    sweep.output.mkdir(parents=True, exist_ok=True)
    commands = sweep.output / "commands.sh"
    commands.write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\n" + "".join(r.shell + "\n" for r in runs)
    )
    return commands
