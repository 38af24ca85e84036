"""The `window_prep` section of olmoearth_run.yaml, parsed into typed strategies.

```yaml
window_prep:
  sampler: {class_path: ...NoopSampler}                   # optional (NoopSampler)
  labeled_window_preparer: {class_path: ..., init_args: {...}}
  data_splitter: {class_path: ..., init_args: {...}}
  label_layer: label               # labels/<label_layer>.tif | .geojson in each window
  label_property: category         # which oe_labels key is the class (optional if only one)
  group_name: default              # scratch/labeled/partitions/<group_name>/
  split_property: split            # window.json properties key holding the split
```

Strategies resolve like every other (`helios.runner.core.classpath`): upstream class paths in
both the `olmoearth_run.runner.tools.…` and `olmoearth_run.tools.…` forms, bare names, or
the import path of a user's subclass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from helios.runner.core.classpath import StrategyError, resolve_strategy
from helios.runner.core.geometry import Projection
from helios.runner.finetune.preparers import BUILTIN_PREPARERS, GridConfig, LabeledWindowPreparer
from helios.runner.finetune.samplers import BUILTIN_SAMPLERS, NoopSampler, Sampler
from helios.runner.finetune.splitters import BUILTIN_SPLITTERS, DataSplitter

WHERE = "olmoearth_run.yaml: window_prep"
STRATEGY_KEYS: dict[str, type] = {
    "sampler": Sampler,
    "labeled_window_preparer": LabeledWindowPreparer,
    "data_splitter": DataSplitter,
}
BUILTINS: tuple[type, ...] = (
    *BUILTIN_SAMPLERS,
    *BUILTIN_PREPARERS,
    *BUILTIN_SPLITTERS,
    GridConfig,
    Projection,
)
"""Classes window_prep strategies may name by upstream path or bare name."""
NAME_KEYS = ("label_layer", "label_property", "group_name", "split_property")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""Names that become file or folder names (label_layer, group_name)."""
LABEL_KEY = "label"
"""window.json properties key describing a labeled window's label."""
RESERVED_PROPERTIES = (LABEL_KEY, "source_task_id")
"""window.json properties of labeled windows other than the split."""


class WindowPrepError(ValueError):
    """Labeled windows cannot be prepared; `problems` lists why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"cannot prepare labeled windows:\n{lines}")


@dataclass
class WindowPrep:
    """The parsed `window_prep` section (fine-tuning only)."""

    sampler: Sampler = field(default_factory=NoopSampler)
    """Chooses the annotation tasks to use (default: all of them)."""
    labeled_window_preparer: LabeledWindowPreparer | None = None
    """Turns each task into labeled windows (required to prepare windows)."""
    data_splitter: DataSplitter | None = None
    """Assigns train / val / test (required to prepare windows)."""
    label_layer: str | None = None
    """Name of the label file in each window: labels/<label_layer>.tif or .geojson."""
    label_property: str | None = None
    """The `oe_labels` key holding the class; may be left out when annotations have one key."""
    group_name: str = "default"
    """Folder of the labeled windows: scratch/labeled/partitions/<group_name>/."""
    split_property: str = "split"
    """Key of the split in each window.json's properties."""

    def check(self) -> list[str]:
        """What is missing to prepare labeled windows (empty when ready)."""
        out = []
        for key in ("labeled_window_preparer", "data_splitter", "label_layer"):
            if getattr(self, key) is None:
                out.append(f"{WHERE}.{key}: missing (needed to prepare labeled windows)")
        return out


def parse_window_prep(raw: Any) -> tuple[WindowPrep | None, list[str]]:
    """Parse the raw `window_prep` mapping; returns it (None if absent) and every problem."""
    if raw is None:
        return None, []
    if not isinstance(raw, dict):
        return None, [f"{WHERE}: expected a mapping"]
    problems = []
    known = (*STRATEGY_KEYS, *NAME_KEYS)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        problems.append(f"{WHERE}: unknown keys {unknown}; known: {list(known)}")
    prep = WindowPrep()
    for key, base in STRATEGY_KEYS.items():
        if raw.get(key) is None:
            continue
        try:
            setattr(prep, key, resolve_strategy(raw[key], base, f"{WHERE}.{key}", BUILTINS))
        except StrategyError as err:
            problems.append(str(err))
    for key in NAME_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{WHERE}.{key}: expected a non-empty string, got {value!r}")
            continue
        if key in ("label_layer", "group_name", "label_property") and not SAFE_NAME.match(value):
            problems.append(
                f"{WHERE}.{key}: {value!r} becomes a file name; use letters, digits, '_', "
                "'-' and '.'"
            )
            continue
        if key == "split_property" and value in RESERVED_PROPERTIES:
            problems.append(f"{WHERE}.{key}: {value!r} is reserved; choose another name")
            continue
        setattr(prep, key, value)
    return (prep if not problems else None), problems
