"""Reading checkpoints safely: tensors and plain values load, pickled code never runs.

Every checkpoint Helios reads (a training run's `last.ckpt`, an exported `encoder.pt`, a
fine-tuned model) goes through `torch.load(..., weights_only=True)` with the argument spelled
out: an explicit `weights_only=True` also holds when `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` is
set, which only changes torch's *default*. A file whose pickle names anything but tensors and
plain values is refused with one line naming it (`UnsafeCheckpointError`); a truncated or
foreign file gets one line too (`CheckpointError`), never a traceback.

`load_checkpoint` reads a file; `check_checkpoint` vets one that Lightning will read itself
(it memory-maps the tensors, so a large checkpoint costs little); `refusing_unsafe` wraps any
other `torch.load(..., weights_only=True)` call in the same translation. torch is imported
when a file is read, so `helios.cli` names these errors without importing it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "check_checkpoint",
    "load_checkpoint",
    "refusing_unsafe",
]

_REFUSED = "Weights only load failed"
"""How torch's weights-only unpickler starts the message of a refused pickle."""
_CODE = ("GLOBAL", "allowlisted")
"""Words of its reasons that mean the pickle names code (a function or class to call)."""
_NO_MMAP = "mmap can only be used"
"""torch's message for a legacy (non-zip) file loaded with `mmap=True`."""


class CheckpointError(ValueError):
    """A checkpoint cannot be read (missing, truncated, not a checkpoint); names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds pickled objects other than tensors and plain values."""

    def __init__(self, path: Path | str) -> None:
        """Args: path: the refused file."""
        self.path = Path(path)
        super().__init__(
            f"{self.path}: not a safe checkpoint (it holds pickled code, refused; only "
            "tensors and plain values load)"
        )


def _first_line(err: BaseException) -> str:
    """The error's type and the first sentence of its message (torch's run to paragraphs)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0].split('. ')[0][:160]}" if text else type(err).__name__


def _weights_only_reason(text: str) -> str:
    """The line of a weights-only refusal that says what the unpickler met."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    after = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.endswith("error:")]
    return f"unsupported pickle content: {after[0] if after else lines[-1]}"[:200]


@contextmanager
def refusing_unsafe(path: Path | str) -> Iterator[None]:
    """Turn torch's refusal or a read failure of `path` into a one-line `CheckpointError`.

    Wrap exactly one `torch.load(path, ..., weights_only=True)` (or a call that loads `path`
    and nothing else), since every failure inside is reported as being about `path`.
    """
    try:
        yield
    except pickle.UnpicklingError as err:
        text = str(err)
        if _REFUSED in text and any(word in text for word in _CODE):
            raise UnsafeCheckpointError(path) from None
        reason = _weights_only_reason(text) if _REFUSED in text else _first_line(err)
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    except (RuntimeError, KeyError, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise CheckpointError(f"{path}: no such checkpoint") from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or not written by torch.save "
            f"({_first_line(err)})"
        ) from None


def load_checkpoint(
    path: Path | str, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """The mapping saved in `path`, loaded with `weights_only=True`.

    Raises:
        UnsafeCheckpointError: the file holds pickled code (nothing of it ran).
        CheckpointError: the file is missing, unreadable, or not a mapping.

    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    import torch

    with refusing_unsafe(path):
        obj = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__})")
    return obj


def check_checkpoint(path: Path | str) -> None:
    """Refuse `path` as `load_checkpoint` would, without reading its tensors into memory.

    For a checkpoint another library (Lightning's resume) loads afterwards: the whole pickle
    is vetted, the tensor data only memory-mapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    import torch

    with refusing_unsafe(path):
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if _NO_MMAP not in str(err):
                raise
            torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) file
