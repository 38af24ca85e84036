"""Atomic writes and input fingerprints: what makes every runner step idempotent.

Every file the runner writes goes to a temporary name in the same directory and is renamed
into place once complete, so a killed step leaves either the old file, the new one, or a
`.tmp` leftover that the next run overwrites. Steps skip work whose outputs exist and whose
recorded fingerprint (`signature`) still matches.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def tmp_path_for(path: Path) -> Path:
    """The temporary name `path` is written under before the final rename."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to `path` if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class UnsafePathError(ValueError):
    """A path built from input names that would leave the folder it must stay in."""


def contained(root: Path, path: Path) -> Path:
    """`path`, checked to lie inside `root` (lexically, after `..` and `.` are resolved).

    Every file the runner writes under a folder named by inputs goes through this, so a name
    like `../../x` in a config can never write outside the scratch folder.

    Raises:
        UnsafePathError: naming both paths.

    """
    base = os.path.normpath(os.path.abspath(root))
    target = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([base, target]) != base:
        raise UnsafePathError(f"{path} is outside {root}: refusing to write there")
    return Path(target)


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically; unchanged content leaves the file untouched."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    write_text(path, text)


def write_text(path: Path, text: str) -> None:
    """Write `text` atomically, skipping the write when the file already holds it."""
    if path.exists() and path.read_text() == text:
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    with open(path) as f:
        return json.load(f)


def file_signature(paths: Iterable[Path]) -> str:
    """A fingerprint of files by name, size and modification time (cheap, no reads)."""
    h = hashlib.sha1()
    for p in sorted(str(p) for p in paths):
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def text_hash(*parts: object) -> str:
    """Hex SHA-1 of the JSON encoding of `parts` (stable across runs and machines)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()


def clean_tmp_files(directory: Path) -> int:
    """Remove leftovers of killed writes (`.<name>.<pid>.tmp`) in `directory`; returns count."""
    n = 0
    if directory.is_dir():
        for p in directory.glob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
            n += 1
    return n
