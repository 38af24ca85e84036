"""Resolve `{class_path, init_args}` strategies from runner configs with jsonargparse.

Upstream class paths load unchanged: any `olmoearth_run.…`, `olmoearth_run.runner.…`,
`rslearn.…` or `rslp.…` path resolves to the Helios class of the same name among the
built-ins the caller hands in (and a bare class name does too). Every other path is imported
as given, so a user's own class works as long as it subclasses the expected base. Unknown
classes get an error listing the supported ones. This module imports nothing of the runner:
each config reader passes its own built-ins.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Sequence
from typing import Any, TypeVar

from jsonargparse import ArgumentParser

T = TypeVar("T")
Builtins = Sequence[type]
"""Classes that upstream (`olmoearth_run.…`, `rslearn.…`) and bare class names resolve to."""

UPSTREAM_PREFIXES = ("olmoearth_run.", "rslearn.", "rslp.")
"""Module prefixes of the upstream runner whose classes Helios provides under the same name."""


class StrategyError(ValueError):
    """A strategy that cannot be resolved or built, with where it was configured."""


def supported_names(base: type, builtins: Builtins) -> list[str]:
    """Names of the built-in classes that are `base` subclasses."""
    return sorted(c.__name__ for c in builtins if issubclass(c, base))


def _full_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def map_class_path(path: str, base: type, where: str, builtins: Builtins) -> str:
    """The import path Helios uses for a configured class path (see module docstring)."""
    classes = {c.__name__: c for c in builtins}
    name = path.rsplit(".", 1)[-1]
    if "." not in path or path.startswith(UPSTREAM_PREFIXES):
        if name in classes:
            return _full_name(classes[name])
        raise StrategyError(
            f"{where}: unknown class {path!r}; supported: "
            f"{', '.join(supported_names(base, builtins))} (or the import path of your own "
            f"subclass of {_full_name(base)})"
        )
    return path


CRS_MODULES = ("rasterio.crs", "rasterio", "pyproj", "pyproj.crs")
"""Modules whose `CRS` constructors a `{_module_, _callable_}` config value may name."""
CRS_CALLABLES: dict[str, tuple[str, ...]] = {
    "CRS.from_epsg": ("code",),
    "CRS.from_string": ("value", "in_crs_string", "string"),
    "CRS.from_user_input": ("value", "user_input"),
    "CRS.from_wkt": ("wkt", "in_wkt_string"),
}
"""The allowed callables and the names their one argument may have (rasterio's, pyproj's)."""
IGNORED_CRS_ARGS = ("morph_from_esri_dialect",)


def _crs_value(value: dict[str, Any], where: str) -> str:
    """The CRS string an upstream `{_module_, _callable_, ...}` CRS value stands for.

    Upstream imports `_module_` and calls `_callable_` with the other keys. Helios never
    imports or calls anything a config names: only the CRS constructors of rasterio and
    pyproj are understood, and their argument is turned into "EPSG:<code>" (else WKT).
    """
    module, func = value.get("_module_"), value.get("_callable_")
    if module not in CRS_MODULES or func not in CRS_CALLABLES:
        raise StrategyError(
            f"{where}: {{_module_: {module}, _callable_: {func}}} is not supported; a config "
            f"cannot call code. Only CRS values are: _module_ one of {list(CRS_MODULES)} "
            f"with _callable_ one of {list(CRS_CALLABLES)}, or a plain CRS string "
            "such as 'EPSG:3857'"
        )
    args = {k: v for k, v in value.items() if k not in ("_module_", "_callable_")}
    names = CRS_CALLABLES[func]
    given = [k for k in args if k in names]
    unknown = sorted(set(args) - set(names) - set(IGNORED_CRS_ARGS))
    if len(given) != 1 or unknown:
        raise StrategyError(
            f"{where}: {module}.{func} takes one argument named {' or '.join(names)}; "
            f"got {sorted(args)}"
        )
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    arg = args[given[0]]
    try:
        crs = CRS.from_epsg(int(arg)) if func == "CRS.from_epsg" else CRS.from_user_input(arg)
    except (CRSError, TypeError, ValueError) as err:
        raise StrategyError(f"{where}: {module}.{func}({arg!r}): {err}") from None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def _map_nested(value: Any, where: str, builtins: Builtins) -> Any:
    """Map class paths of nested `{class_path, init_args}` values (e.g. output_projection).

    Upstream's `{_module_, _callable_, ...}` values become CRS strings (`_crs_value`).
    """
    if isinstance(value, dict) and ("_module_" in value or "_callable_" in value):
        return _crs_value(value, where)
    if isinstance(value, dict):
        out = {k: _map_nested(v, f"{where}.{k}", builtins) for k, v in value.items()}
        if isinstance(out.get("class_path"), str):
            out["class_path"] = map_class_path(out["class_path"], object, where, builtins)
        return out
    if isinstance(value, list):
        return [_map_nested(v, where, builtins) for v in value]
    return value


def normalize_spec(spec: Any, base: type, where: str, builtins: Builtins) -> dict[str, Any]:
    """Check a strategy's shape and map its class paths; returns `{class_path, init_args}`."""
    if isinstance(spec, str):
        spec = {"class_path": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise StrategyError(f"{where}: expected {{class_path: ..., init_args: {{...}}}}")
    extra = sorted(set(spec) - {"class_path", "init_args"})
    if extra:
        raise StrategyError(f"{where}: unknown keys {extra}; expected class_path and init_args")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise StrategyError(f"{where}.init_args: expected a mapping")
    return {
        "class_path": map_class_path(spec["class_path"], base, where, builtins),
        "init_args": _map_nested(init_args, f"{where}.init_args", builtins),
    }


def _clean_message(err: Exception) -> str:
    lines = str(err).splitlines()
    if lines and lines[0].startswith('Parser key "strategy"'):
        lines = lines[1:]
    return textwrap.dedent("\n".join(lines)).strip()


def resolve_strategy(spec: Any, base: type[T], where: str, builtins: Builtins = ()) -> T:
    """Build the object a `{class_path, init_args}` spec names; it must subclass `base`.

    `builtins` are the classes upstream and bare class names may name (the caller's own
    registry: partitioners, postprocessors, data sources, ...); nested values are mapped
    against the same list.

    Raises:
        StrategyError: naming `where`, for unknown classes, classes that are not `base`
            subclasses, and init_args that do not match the class's typed signature.

    """
    normalized = normalize_spec(spec, base, where, builtins)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--strategy", type=base)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = parser.parse_object({"strategy": normalized})
            obj = parser.instantiate(cfg).strategy
    except Exception as err:  # jsonargparse raises several types; all are config errors
        msg = _clean_message(err)
        if "does not correspond to a subclass" in msg:
            msg = (
                f"{normalized['class_path']} is not a {base.__name__}: subclass "
                f"{_full_name(base)} (supported built-ins: "
                f"{', '.join(supported_names(base, builtins))})"
            )
        elif "No module named" in msg or "Unable to import" in msg:
            msg += f"\n(supported built-ins: {', '.join(supported_names(base, builtins))})"
        raise StrategyError(f"{where}: {msg}") from None
    if not isinstance(obj, base):
        raise StrategyError(f"{where}: {normalized['class_path']} did not build a {base.__name__}")
    return obj
