"""`LatentMIM`: latent masked image modelling as a LightningModule.

The default objective ("lite") predicts, for every DECODER token, the output of a frozen,
randomly initialised projection of that token's pixels, and scores predictions with the
patch-discrimination loss. With two masked views it adds InfoNCE between their pooled
encodings. Alternatives: an EMA copy of the encoder as the target (`target="ema"`), or MAE-style
pixel reconstruction (`objective="mae"`). Losses run in float32 even under bf16 autocast.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from helios.data.sample import MaskedBatch, MaskValue
from helios.nn.api import TokensAndMasks
from helios.nn.export import EncoderConfig
from helios.nn.losses import PixelHead, info_nce_loss, mae_loss, patch_discrimination_loss, patchify
from helios.nn.patch_embed import TokenEmbedding
from helios.nn.predictor import Predictor


def _gather(
    tokens: dict[str, Tensor], masks: dict[str, Tensor], value: MaskValue
) -> tuple[Tensor, Tensor]:
    """Tokens whose mask equals `value`, flattened to [N, D], with their sample index [N]."""
    feats, owners = [], []
    for name, tok in tokens.items():
        sel = masks[name] == value
        feats.append(tok[sel])
        owners.append(torch.nonzero(sel, as_tuple=True)[0])
    return torch.cat(feats), torch.cat(owners)


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LatentMIM(L.LightningModule):
    """Pretrains a `FlexiEncoder` with latent masked image modelling."""

    def __init__(
        self,
        modalities: list[str] | None = None,
        encoder: EncoderConfig | None = None,
        predictor_depth: int = 4,
        predictor_dim: int | None = None,
        objective: Literal["latent", "mae"] = "latent",
        target: Literal["random_projection", "ema"] = "random_projection",
        ema_decay: tuple[float, float] = (0.996, 1.0),
        tau: float = 0.1,
        contrastive_weight: float = 0.1,
        lr: float = 1e-4,
        weight_decay: float = 0.02,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
    ) -> None:
        """Build encoder, predictor and target.

        Args:
            modalities: modalities the encoder reads (the CLI links this to the data's).
            encoder: encoder size and options (see configs/model/).
            predictor_depth: transformer blocks in the predictor.
            predictor_dim: predictor width (default: the encoder's).
            objective: "latent" (patch discrimination against targets) or "mae" (pixels).
            target: targets from a frozen random projection, or from an EMA encoder.
            ema_decay: (start, end) EMA decay, moved linearly over training.
            tau: temperature of the patch-discrimination and InfoNCE losses.
            contrastive_weight: weight of InfoNCE between two masked views (needs num_views=2).
            lr: peak learning rate (AdamW).
            weight_decay: AdamW weight decay (not applied to norms, biases or embeddings).
            betas: AdamW betas.
            warmup_steps: linear warmup steps.
            min_lr_ratio: final learning rate as a fraction of `lr` (cosine schedule).

        """
        super().__init__()
        if not modalities:
            raise ValueError("LatentMIM needs the list of modalities (set model.modalities)")
        self.modalities = list(modalities)
        if isinstance(encoder, dict):  # hyperparameters read back from a checkpoint
            encoder = EncoderConfig(**encoder)
        self.encoder_config = encoder or EncoderConfig()
        # Plain values only, so checkpoints load with weights_only=True; `_class_path` lets
        # `helios validate/test/predict --ckpt_path` rebuild the model from the checkpoint.
        self.save_hyperparameters(
            {
                "_class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                "modalities": self.modalities,
                "encoder": asdict(self.encoder_config),
                "predictor_depth": predictor_depth,
                "predictor_dim": predictor_dim,
                "objective": objective,
                "target": target,
                "ema_decay": list(ema_decay),
                "tau": tau,
                "contrastive_weight": contrastive_weight,
                "lr": lr,
                "weight_decay": weight_decay,
                "betas": list(betas),
                "warmup_steps": warmup_steps,
                "min_lr_ratio": min_lr_ratio,
            }
        )
        cfg = self.encoder_config
        self.encoder = cfg.build(self.modalities)
        self.predictor = Predictor(
            self.modalities,
            encoder_dim=cfg.embed_dim,
            embed_dim=predictor_dim,
            depth=predictor_depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            max_patch_size=cfg.max_patch_size,
        )
        self.objective = objective
        self.target_kind = target
        self.target_projection: TokenEmbedding | None = None
        self.target_encoder: nn.Module | None = None
        self.pixel_head: PixelHead | None = None
        if objective == "mae":
            self.pixel_head = PixelHead(self.modalities, cfg.embed_dim, cfg.max_patch_size)
        elif target == "random_projection":
            self.target_projection = TokenEmbedding(
                self.modalities, cfg.embed_dim, cfg.max_patch_size
            )
            self.target_projection.requires_grad_(False)
        else:
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.ema_decay = ema_decay
        self.tau = tau
        self.contrastive_weight = contrastive_weight
        self.lr, self.weight_decay, self.betas = lr, weight_decay, betas
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio

    # -- objective -----------------------------------------------------------------------------
    @torch.no_grad()
    def _targets(self, batch: MaskedBatch, view: int) -> dict[str, Tensor]:
        if self.target_projection is not None:
            return self.target_projection(batch.data, batch.patch_size)
        assert self.target_encoder is not None
        available = (MaskValue.ENCODER, MaskValue.TARGET_ONLY, MaskValue.DECODER)
        return self.target_encoder(batch, view, visible=available).tokens

    def _view_loss(self, batch: MaskedBatch, view: int) -> tuple[Tensor, TokensAndMasks, int]:
        encoded = self.encoder(batch, view)
        masks = batch.masks[view]
        decoded = self.predictor(encoded, batch.timestamps, batch.patch_size, masks=masks)
        if self.pixel_head is not None:
            pixels = self.pixel_head(decoded, batch.patch_size)
            targets = patchify(batch.data, batch.patch_size)
            # pixel patches differ in size between modalities: compare them flattened
            pred = torch.cat([pixels[n][masks[n] == MaskValue.DECODER].flatten() for n in pixels])
            tgt = torch.cat([targets[n][masks[n] == MaskValue.DECODER].flatten() for n in pixels])
            n_dec = sum(int((masks[n] == MaskValue.DECODER).sum()) for n in pixels)
            return mae_loss(pred, tgt), encoded, n_dec
        pred, owner = _gather(decoded, masks, MaskValue.DECODER)
        tgt, _ = _gather(self._targets(batch, view), masks, MaskValue.DECODER)
        return (
            patch_discrimination_loss(pred, tgt, owner, tau=self.tau),
            encoded,
            int(pred.shape[0]),
        )

    def _step(self, batch: MaskedBatch, stage: str) -> Tensor:
        losses, pooled, decoded = [], [], 0
        for v in range(batch.num_views):
            loss, encoded, n = self._view_loss(batch, v)
            losses.append(loss)
            decoded += n
            pooled.append(encoded.pool("mean"))
        loss = torch.stack(losses).mean()
        self.log(
            f"{stage}/mim_loss",
            loss,
            prog_bar=stage == "train",
            batch_size=batch.batch_size,
            sync_dist=stage != "train",
        )
        if batch.num_views >= 2 and self.contrastive_weight > 0:
            contrastive = info_nce_loss(pooled[0], pooled[1], tau=self.tau)
            self.log(
                f"{stage}/contrastive_loss",
                contrastive,
                batch_size=batch.batch_size,
                sync_dist=stage != "train",
            )
            loss = loss + self.contrastive_weight * contrastive
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=True,
            batch_size=batch.batch_size,
            sync_dist=stage != "train",
        )
        counts = batch.num_tokens(0)
        self._last_token_counts = {
            "encoded": counts[MaskValue.ENCODER] * batch.num_views,
            "decoded": decoded,
            "target": decoded,
        }
        return loss

    def training_step(self, batch: MaskedBatch, batch_idx: int) -> Tensor:
        """One optimisation step's loss."""
        return self._step(batch, "train")

    def validation_step(self, batch: MaskedBatch, batch_idx: int) -> Tensor:
        """Loss on held-out samples."""
        return self._step(batch, "val")

    def test_step(self, batch: MaskedBatch, batch_idx: int) -> Tensor:
        """Loss on test samples."""
        return self._step(batch, "test")

    def predict_step(self, batch: MaskedBatch, batch_idx: int) -> dict[str, Tensor]:
        """Pooled embeddings of every available token: {"ids", "embedding"}."""
        pooled = self.encoder(batch, 0).pool("mean")
        return {"ids": torch.tensor(batch.sample_ids), "embedding": pooled.float().cpu()}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update the EMA target after each optimiser step."""
        if self.target_encoder is None:
            return
        total = max(1, self.trainer.estimated_stepping_batches)
        start, end = self.ema_decay
        decay = start + (end - start) * min(1.0, self.global_step / total)
        with torch.no_grad():
            for tgt, src in zip(self.target_encoder.parameters(), self.encoder.parameters()):
                tgt.lerp_(src.detach(), 1 - decay)

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """AdamW (fused on CUDA) with no decay on norms/biases/embeddings, cosine schedule."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if p.ndim < 2 or "embed" in name or "norm" in name or "token" in name:
                no_decay.append(p)
            else:
                decay.append(p)
        fused = torch.cuda.is_available() and all(p.is_cuda for p in decay + no_decay)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.lr,
            betas=self.betas,
            fused=fused or None,
        )
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1000
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: cosine_with_warmup(s, self.warmup_steps, total, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
