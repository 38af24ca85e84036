"""`{class_path, init_args}` choices in eval configs, kept as plain data and built on demand.

An eval recipe must stay plain data (it is written to YAML by sweeps and into results.json),
so the extension points of `EvalConfig` (model, task, protocol) hold a `ClassSpec`, or the
short alias form that names one. `build` checks the init args against the class's typed
signature with jsonargparse and instantiates it; the same check runs when a config is parsed,
so a bad option fails before anything is loaded.
"""

from __future__ import annotations

import re
import textwrap
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jsonargparse import ArgumentParser, Namespace


class ComponentError(ValueError):
    """A class path or init args that do not build, with where they were configured."""


@dataclass
class ClassSpec:
    """A class chosen by import path, with its init args (`{class_path, init_args}` in YAML)."""

    class_path: str
    """Import path of the class, e.g. `helios.evals.datasets.mados.MADOS`."""
    init_args: dict[str, Any] = field(default_factory=dict)
    """Its init arguments, checked against its signature when built."""

    @property
    def name(self) -> str:
        """The class's own name (the last part of the path)."""
        return self.class_path.rpartition(".")[2]


def resolve_alias(name: str, aliases: Mapping[str, str], what: str) -> str:
    """The class path a short name stands for; an import path is returned as it is."""
    if name in aliases:
        return aliases[name]
    if "." not in name:
        known = f"; known: {', '.join(aliases)}" if aliases else ""
        raise ComponentError(
            f"unknown {what} {name!r}{known} (or give the import path of your own class)"
        )
    return name


@contextmanager
def located(where: str) -> Iterator[None]:
    """Prefix the message of a `ComponentError` raised inside with `where`."""
    try:
        yield
    except ComponentError as err:
        raise ComponentError(f"{where}: {err}") from None


def build(spec: ClassSpec, base: Any, where: str) -> Any:
    """Instantiate `spec`, which must name a subclass of `base` (a class or a Protocol).

    For a callable Protocol such as `Callable`-like task factories, jsonargparse returns a
    partial that takes the Protocol's arguments (see `helios.evals.tasks.TaskFactory`).

    Raises:
        ComponentError: naming `where`, for an unknown class, a class that is no `base`, or
            init args that do not match its signature.

    """
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--component", type=base)
    value = {"class_path": spec.class_path, "init_args": dict(spec.init_args)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return parser.instantiate(parser.parse_object({"component": value})).component
    except Exception as err:  # jsonargparse raises several types; all are config errors
        raise ComponentError(f"{where}: {spec.class_path}: {_clean(err)}") from None


def from_namespace(value: Any) -> Any:
    """A parsed `{class_path, init_args}` value as a `ClassSpec`; anything else unchanged."""
    if isinstance(value, Namespace) and "class_path" in value:
        init = value.get("init_args")
        return ClassSpec(str(value.class_path), init.as_dict() if init is not None else {})
    return value


def _clean(err: Exception) -> str:
    lines = [ln for ln in str(err).splitlines() if not ln.startswith('Parser key "component"')]
    text = textwrap.dedent("\n".join(lines)).strip()
    text = re.sub(r"^Type <class '[\w.]+'> expects a function or a callable class: ", "", text)
    return text.split(". Got value:")[0]
