"""What a run needs to resume exactly: a resume-point checkpoint and the random streams.

Shared by pretraining (`helios.train`) and the runner's fine-tuning, which must not import
each other.
"""

from __future__ import annotations

import ast
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["RNGStateCallback", "ResumeCheckpoint"]


class ResumeCheckpoint(ModelCheckpoint):
    """The run's resume point, `last.ckpt`: a checkpoint of its own, apart from any best one.

    Its class name keeps its state apart from other `ModelCheckpoint`s in a checkpoint.
    """


class RNGStateCallback(L.Callback):
    """Saves and restores Python, NumPy and torch RNG states so a resumed run continues exactly."""

    def state_dict(self) -> dict[str, Any]:
        """RNG states as tensors and plain values (weights_only-safe)."""
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [
                kind,
                torch.from_numpy(np.asarray(keys)),
                float(pos),
                float(has_gauss),
                float(cached),
            ],
            "python": repr(random.getstate()),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the saved RNG states."""
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state(
            (kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached))
        )
        random.setstate(ast.literal_eval(state_dict["python"]))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
