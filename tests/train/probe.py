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


class ValLossRecorder(L.Callback):
    """Writes the validation loss of every validation run to <run>/val_losses.json."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.losses.append(float(trainer.callback_metrics["val/loss"]))
            path = Path(trainer.default_root_dir) / "val_losses.json"
            path.write_text(json.dumps(self.losses))


def tiny_run(h5_dir, callbacks, num_workers=0, encoder=None, **trainer):
    """A config delta over configs/latent_mim.yaml: a 32-wide 2-block encoder on `h5_dir`, CPU.

    `callbacks` are class paths; `encoder` adds encoder options; `trainer` adds trainer keys.
    """
    return {
        "model": {
            "init_args": {
                "encoder": {"embed_dim": 32, "depth": 2, "num_heads": 4, **(encoder or {})},
                "predictor_depth": 1,
                "warmup_steps": 2,
            }
        },
        "data": {
            "init_args": {
                "h5_dir": str(h5_dir),
                "norm_stats": None,
                "batch_size": 4,
                "crop_tokens": [2, 4],
                "patch_sizes": [2, 4, 8],
                "val_samples": 4,
                "num_workers": num_workers,
            }
        },
        "trainer": {
            "logger": False,
            "enable_progress_bar": False,
            "accelerator": "cpu",
            "devices": 1,
            **trainer,
            "callbacks": [{"class_path": c} for c in callbacks],
        },
    }
