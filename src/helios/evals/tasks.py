"""Eval tasks: which benchmark reader opens the train, val and test splits.

A task is any `EvalDataset` subclass whose init takes a `split` argument, chosen by class
path with its other init args (`task: {class_path: helios.evals.datasets.mados.MADOS,
init_args: {root: ..., tile_size: 80}}`); a class of your own works the same way. The short
form `task: {name: mados, root: ..., options: {...}}` names a built-in reader by task name
(`helios eval tasks` lists them); `options` are the reader's other init args.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from helios.evals.api import EvalDataset, Split
from helios.evals.components import ClassSpec, ComponentError, build, located

DEMO_TASKS = ("demo-cloud-tiles", "demo-cloud-seg")
GEOBENCH_TASKS = (
    "m-eurosat",
    "m-bigearthnet",
    "m-so2sat",
    "m-brick-kiln",
    "m-forestnet",
    "m-cashew-plant",
    "m-SA-crop-type",
)
OTHER_TASKS = ("mados", "sen1floods11", "pastis", "breizhcrops")
TASKS = DEMO_TASKS + GEOBENCH_TASKS + OTHER_TASKS

_DEMO = "helios.evals.datasets.demo.DemoCloudDataset"
_GEOBENCH = "helios.evals.datasets.geobench.GeoBenchDataset"
TASK_ALIASES: dict[str, tuple[str, dict[str, str]]] = {
    **{name: (_DEMO, {"task": name}) for name in DEMO_TASKS},
    **{name: (_GEOBENCH, {"name": name}) for name in GEOBENCH_TASKS},
    "mados": ("helios.evals.datasets.mados.MADOS", {}),
    "sen1floods11": ("helios.evals.datasets.sen1floods11.Sen1Floods11", {}),
    "pastis": ("helios.evals.datasets.pastis.PASTIS", {}),
    "breizhcrops": ("helios.evals.datasets.breizhcrops.BreizhCrops", {}),
}
"""Task name -> (reader class path, the init args that pick the task within the reader)."""


class TaskFactory(Protocol):
    """Opens one split of a task: a reader class with every init arg bound but `split`."""

    def __call__(self, split: Split) -> EvalDataset:
        """The split's dataset."""
        ...


@dataclass
class TaskConfig:
    """A built-in task by name (the short form of a `{class_path, init_args}` task)."""

    name: str = "demo-cloud-tiles"
    """A task name (see `helios eval tasks`), or the import path of a reader class."""
    root: str = "demo_data"
    """The benchmark's folder as downloaded (for demo tasks: `helios data demo --out`)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Further init args of the reader (e.g. {"modalities": ["sentinel1"]} for Sen1Floods11),
    checked against its signature."""

    def spec(self) -> ClassSpec:
        """The reader class and init args (without `split`) this task stands for."""
        if self.name in TASK_ALIASES:
            class_path, fixed = TASK_ALIASES[self.name]
        elif "." in self.name:  # an import path, as in the class_path form
            class_path, fixed = self.name, {}
        else:
            raise ComponentError(
                f"unknown task {self.name!r}; known tasks: {', '.join(TASKS)} (or the import "
                "path of an EvalDataset subclass)"
            )
        return ClassSpec(class_path, {"root": self.root, **fixed, **self.options})


def task_spec(task: TaskConfig | ClassSpec) -> ClassSpec:
    """The `{class_path, init_args}` form of either way of writing a task."""
    return task.spec() if isinstance(task, TaskConfig) else task


def task_factory(task: TaskConfig | ClassSpec, where: str = "task") -> TaskFactory:
    """The split opener of a task, its init args checked (no file is read yet)."""
    with located(where):
        spec = task_spec(task)
    factory: TaskFactory = build(spec, TaskFactory, where)
    return factory


def build_task(
    name: str, root: str | Path, split: Split, options: dict[str, Any] | None = None
) -> EvalDataset:
    """Open split `split` of task `name` (a task name or a reader's import path) under `root`."""
    config = TaskConfig(name, str(root), dict(options or {}))
    return task_factory(config, f"task {name}")(split=split)
