"""A restricted unpickler for GEO-Bench's per-sample label pickles (no code runs).

GEO-Bench stores each sample's label and attributes as a pickle inside its HDF5 file. Only
numpy arrays, plain Python values and dates are rebuilt; anything else becomes an inert
`_Opaque` placeholder, so a hostile file cannot run code.
"""

from __future__ import annotations

import ast
import builtins
import datetime
import io
import pickle
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np


class GeoBenchFormatError(ValueError):
    """A GEO-Bench file is missing, unreadable or not in the expected layout."""


class _Opaque:
    """Inert stand-in for any class in a GEO-Bench pickle (band infos, Affine, CRS ...)."""

    upstream: ClassVar[str] = ""
    args: tuple[object, ...]
    state: object

    def __new__(cls, *args: object, **kwargs: object) -> _Opaque:
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        self.state = state


_NUMPY_SAFE: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray}
_NUMPY_SAFE[("numpy", "dtype")] = np.dtype
for _mod in ("numpy.core", "numpy._core"):
    _NUMPY_SAFE[(f"{_mod}.multiarray", "_reconstruct")] = np.zeros(1).__reduce__()[0]
    _NUMPY_SAFE[(f"{_mod}.multiarray", "scalar")] = np.int64(0).__reduce__()[0]
    _NUMPY_SAFE[(f"{_mod}.numeric", "_frombuffer")] = np.zeros(1).__reduce_ex__(5)[0]
_BUILTINS_SAFE = {"set", "frozenset", "complex", "bytearray", "slice", "range", "object"}
_DATETIME_SAFE = {"date", "datetime", "time", "timedelta", "timezone"}


class _SafeUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dates and containers; every other class becomes an `_Opaque`.

    Builtins outside a small allow-list (eval, getattr, __import__ ...) are refused, so the
    result holds no callable from the file and loading runs no code from it.
    """

    _stubs: ClassVar[dict[str, type[_Opaque]]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_SAFE:
            return _NUMPY_SAFE[(module, name)]
        if module == "datetime" and name in _DATETIME_SAFE:
            return getattr(datetime, name)
        if module == "collections" and name == "OrderedDict":
            from collections import OrderedDict

            return OrderedDict
        if module in ("builtins", "__builtin__"):
            if name in _BUILTINS_SAFE:
                return getattr(builtins, name)
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        key = f"{module}.{name}"
        if key not in self._stubs:
            self._stubs[key] = type(name.split(".")[-1], (_Opaque,), {"upstream": key})
        return self._stubs[key]


def read_pickled_attrs(file: h5py.File, path: Path) -> dict[str, Any]:
    """Decode a sample's "pickle" attribute (labels and band metadata) without running code."""
    text = file.attrs.get("pickle")
    if text is None:
        raise GeoBenchFormatError(f"{path}: no 'pickle' attribute (holds the sample's label)")
    try:
        raw = ast.literal_eval(text.decode() if isinstance(text, bytes) else str(text))
        if not isinstance(raw, bytes):
            raise TypeError(f"expected the repr of bytes, got {type(raw).__name__}")
        attrs = _SafeUnpickler(io.BytesIO(raw)).load()
    except Exception as err:  # any decoding failure means a corrupt or foreign file
        raise GeoBenchFormatError(f"{path}: bad 'pickle' attribute ({err!r})") from err
    if not isinstance(attrs, dict):
        raise GeoBenchFormatError(f"{path}: 'pickle' attribute is not a dict")
    return attrs
