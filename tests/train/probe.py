"""Callbacks the training tests attach to runs (also inside DDP and killed subprocesses)."""

import json
import os
from pathlib import Path

import lightning as L


class LossRecorder(L.Callback):
    """Writes per-step losses, batches and a parameter checksum to <run>/probe_rank<r>.json.

    Steps of earlier attempts in the same run folder are kept; a step run again overwrites.
    """

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}
        self.batches: dict[int, list[int]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses[int(trainer.global_step)] = float(loss)
        self.batches[int(trainer.global_step)] = [batch.patch_size, *batch.sample_ids]

    def on_train_end(self, trainer, pl_module):
        self.flush(trainer, pl_module)

    def flush(self, trainer, pl_module) -> None:
        """Merge what this attempt recorded into the run folder's probe file."""
        checksum = float(sum(p.detach().double().sum() for p in pl_module.encoder.parameters()))
        path = Path(trainer.default_root_dir) / f"probe_rank{trainer.global_rank}.json"
        previous = json.loads(path.read_text()) if path.exists() else {"losses": {}}
        previous["losses"].update({str(k): v for k, v in self.losses.items()})
        previous.setdefault("batches", {}).update({str(k): v for k, v in self.batches.items()})
        previous["checksum"] = checksum
        previous["world_size"] = trainer.world_size
        path.write_text(json.dumps(previous))


class KillAt(L.Callback):
    """Kills the process (like a preemption) once `HELIOS_TEST_KILL_AT` steps are done.

    The kill comes before that step's checkpoint (Lightning runs checkpoint callbacks last);
    the `LossRecorder` of the run first saves the losses of the attempt.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == int(os.environ.get("HELIOS_TEST_KILL_AT", "-1")):
            for callback in trainer.callbacks:
                if isinstance(callback, LossRecorder):
                    callback.flush(trainer, pl_module)
            os._exit(137)
