"""Training callbacks: throughput and MFU, encoder export (resume state: `helios.resume`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from helios.nn.export import export_encoder


def measure_matmul_peak(
    device: torch.device, dtype: torch.dtype | None = None, n: int = 2048
) -> float:
    """Measured dense matmul FLOP/s on `device` (bf16 on CUDA, fp32 on CPU).

    The operands come from a forked RNG, so measuring leaves the run's random stream as it was.
    """
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 3
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _count(module: torch.nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ThroughputMonitor(L.Callback):
    """Logs tokens/s, the data-wait fraction of step time, and estimated MFU.

    Tokens are counted as encoded, decoded and target; MFU is against a measured matmul peak.
    """

    def __init__(self, log_every_n_steps: int = 10, peak_flops: float | None = None) -> None:
        """Args: log_every_n_steps: averaging window; peak_flops: override the measured peak."""
        self.every = log_every_n_steps
        self.peak = peak_flops
        self._reset()

    def _reset(self) -> None:
        self._tokens = {"encoded": 0, "decoded": 0, "target": 0}
        self._wait = 0.0
        self._start: float | None = None
        self._last_end: float | None = None
        self._flops = 0.0
        self._steps = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Measure the device's matmul peak once."""
        if self.peak is None:
            self.peak = measure_matmul_peak(pl_module.device)
        self._enc_params = _count(getattr(pl_module, "encoder", None))
        self._pred_params = _count(getattr(pl_module, "predictor", None))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Record how long the step waited for its batch."""
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        elif self._last_end is not None:
            self._wait += now - self._last_end

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Accumulate token counts and log averages every `log_every_n_steps`."""
        counts = getattr(pl_module, "_last_token_counts", None)
        if counts:
            for k in self._tokens:
                self._tokens[k] += counts[k]
            # forward + backward = 3x forward; 2 FLOPs per multiply-add
            self._flops += 6 * (
                self._enc_params * counts["encoded"]
                + self._pred_params * (counts["encoded"] + counts["decoded"])
            )
        self._steps += 1
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._last_end = time.perf_counter()
        if self._steps >= self.every and self._start is not None:
            elapsed = self._last_end - self._start
            world = trainer.world_size
            metrics = {
                f"throughput/{k}_tokens_per_s": v * world / elapsed for k, v in self._tokens.items()
            }
            metrics["throughput/data_wait_fraction"] = self._wait / elapsed
            metrics["throughput/steps_per_s"] = self._steps / elapsed
            if self.peak:
                metrics["throughput/mfu"] = self._flops / elapsed / self.peak
            pl_module.log_dict(metrics, rank_zero_only=True)
            self._reset()
            self._start = time.perf_counter()


class ExportEncoder(L.Callback):
    """Writes `<run dir>/encoder.pt` (weights + config + normalization) at the end of fit."""

    def __init__(self, filename: str = "encoder.pt") -> None:
        """Args: filename: name of the exported file inside the run directory."""
        self.filename = filename

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Export from rank zero."""
        if trainer.global_rank != 0:
            return
        datamodule: Any = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "normalizer"):
            raise ValueError("ExportEncoder needs a data module with a `normalizer`")
        normalizer = datamodule.normalizer
        patch_sizes = getattr(datamodule, "patch_sizes", [8])
        path = Path(trainer.default_root_dir) / self.filename
        export_encoder(
            path,
            pl_module.encoder,  # type: ignore[arg-type]
            pl_module.encoder_config,  # type: ignore[arg-type]
            normalizer,
            patch_size=max(patch_sizes),
            metadata={
                "global_step": int(trainer.global_step),
                "run_dir": os.fspath(trainer.default_root_dir),
            },
        )
        print(f"exported encoder to {path}")
