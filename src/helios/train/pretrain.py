"""`LatentMIM`: latent masked image modelling as a LightningModule.

The default objective ("lite", OlmoEarth v1's recipe) predicts, for every DECODER token, the
output of a frozen copy of the encoder's initial patch embedding on that token's pixels, and
scores predictions with patch discrimination per modality (summed over modalities, x 2 tau).
With two masked views it adds InfoNCE (view a -> view b) between their pooled encodings, passed
through a linear head. Every default equals the reference implementation's (docs/training.md,
"Fidelity to OlmoEarth"); the options that depart from it say so. Losses run in float32 even
under bf16 autocast.

The objective and the target are parts, named in the config by a short name or the import
path of a subclass (strings, so checkpoints keep plain values): `objective` is an `Objective`
(`latent` = `PatchDiscrimination`, `mae` = `PixelReconstruction`), `target` a `Target`
(`random_projection` = `RandomProjectionTarget`, `ema` = `EMATarget`, an EMA copy of the
encoder). The networks they add keep their attribute names (`target_projection`,
`target_encoder`, `pixel_head`), so checkpoints keep their state-dict keys.

`init_from` starts the encoder from an exported encoder file (e.g. an OlmoEarth model
converted by `helios.nn.olmoearth.export_olmoearth`): its architecture and weights.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, replace
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from torch import Tensor, nn

from helios.data.sample import MaskedBatch, MaskValue
from helios.nn.api import TokensAndMasks
from helios.nn.attention import class_path, part_class
from helios.nn.encoder import FlexiEncoder
from helios.nn.export import EncoderConfig, ExportedEncoder, load_encoder
from helios.nn.losses import (
    PixelHead,
    covariance_loss,
    info_nce_loss,
    mae_loss,
    modality_patch_discrimination_loss,
    patch_discrimination_loss,
    patchify,
    variance_loss,
)
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


logger = logging.getLogger(__name__)


def initial_encoder(path: str, requested: EncoderConfig) -> ExportedEncoder:
    """The exported encoder at `path`, its config taking `requested`'s `drop_path`.

    The file's architecture is used whole; fields of `requested` that differ are logged.
    """
    start = load_encoder(path)
    start.config = replace(start.config, drop_path=requested.drop_path)
    have, asked = asdict(start.config), asdict(requested)
    ignored = [name for name, value in have.items() if asked[name] != value]
    if ignored:
        logger.warning("init_from %s: the file's encoder; ignoring encoder %s", path, ignored)
    return start


def load_initial_weights(encoder: FlexiEncoder, start: ExportedEncoder | None) -> None:
    """Copy `start`'s weights (if any) into `encoder`; `start` must hold its modalities."""
    if start is None:
        return
    missing = [m for m in encoder.modalities if m not in start.modalities]
    if missing:
        raise ValueError(f"init_from: no weights for {missing} (the file has {start.modalities})")
    unused = [m for m in start.modalities if m not in encoder.modalities]
    if unused:
        logger.warning("init_from: not using the weights of modalities %s", unused)
    state = start.encoder.state_dict()
    encoder.load_state_dict({k: state[k] for k in encoder.state_dict()}, strict=True)


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Target(ABC):
    """Where the latent objective's per-token targets come from.

    A target builds one frozen network, which `LatentMIM` registers under `attribute` (the
    prefix of its checkpoint keys), and computes targets with it.
    """

    attribute: ClassVar[str]
    """The `LatentMIM` attribute that holds the target network."""

    @abstractmethod
    def build(self, model: LatentMIM) -> nn.Module:
        """The frozen target network for `model` (its encoder and predictor already exist)."""

    @abstractmethod
    def targets(self, network: nn.Module, batch: MaskedBatch, view: int) -> dict[str, Tensor]:
        """Per-token targets [B, h, w, T, S, D] of `batch.masks[view]`."""

    def after_step(self, model: LatentMIM, network: nn.Module) -> None:
        """Update the network after an optimiser step (nothing by default)."""
        return None


class RandomProjectionTarget(Target):
    """A frozen copy of the encoder's patch embedding at initialisation (random weights).

    As the reference's ``FrozenTargetProjection`` (exit depth 0, EMA decay 1): online and target
    embeddings start identical, and only the online one trains.
    """

    attribute = "target_projection"

    def build(self, model: LatentMIM) -> nn.Module:
        """A deep copy of `model.encoder.token_embedding`, without gradients."""
        projection: nn.Module = copy.deepcopy(model.encoder.token_embedding)
        return projection.requires_grad_(False)

    def targets(self, network: nn.Module, batch: MaskedBatch, view: int) -> dict[str, Tensor]:
        """The projection of every token."""
        out: dict[str, Tensor] = network(batch.inputs(view), batch.patch_size)
        return out


class EMATarget(Target):
    """An EMA copy of the encoder, encoding every available token; decay from `ema_decay`."""

    attribute = "target_encoder"

    def build(self, model: LatentMIM) -> nn.Module:
        """A frozen copy of the encoder."""
        return copy.deepcopy(model.encoder).requires_grad_(False)

    def targets(self, network: nn.Module, batch: MaskedBatch, view: int) -> dict[str, Tensor]:
        """The copy's output for every available token of the view."""
        available = (MaskValue.ENCODER, MaskValue.TARGET_ONLY, MaskValue.DECODER)
        tokens: dict[str, Tensor] = network(batch, view, visible=available).tokens
        return tokens

    def after_step(self, model: LatentMIM, network: nn.Module) -> None:
        """Move the copy towards the encoder; the decay goes linearly over `model.ema_decay`."""
        total = max(1, model.trainer.estimated_stepping_batches)
        start, end = model.ema_decay
        decay = start + (end - start) * min(1.0, model.global_step / total)
        with torch.no_grad():
            for tgt, src in zip(network.parameters(), model.encoder.parameters()):
                tgt.lerp_(src.detach(), 1 - decay)


class Objective(ABC):
    """What the predictor learns to output at DECODER slots, and its loss."""

    uses_target: ClassVar[bool] = True
    """Whether `LatentMIM` builds its `target` for this objective."""

    def build(self, model: LatentMIM) -> dict[str, nn.Module]:
        """Networks the objective trains, by `LatentMIM` attribute name (none by default)."""
        return {}

    @abstractmethod
    def loss(
        self, model: LatentMIM, batch: MaskedBatch, view: int, decoded: dict[str, Tensor]
    ) -> tuple[Tensor, int]:
        """The loss of one view from the predictor's output, and its number of DECODER tokens."""


class PatchDiscrimination(Objective):
    """Patch discrimination (temperature `tau`) of the predictions against the target's.

    `model.negatives` chooses the negatives: ``"modality"`` (the reference's
    ``ModalityPatchDiscriminationLoss``: same modality of the same sample, summed over
    modalities) or ``"sample"`` (``PatchDiscriminationLoss``: every modality of the sample).
    """

    def loss(
        self, model: LatentMIM, batch: MaskedBatch, view: int, decoded: dict[str, Tensor]
    ) -> tuple[Tensor, int]:
        """Each decoded token against its own target among its negatives."""
        masks = batch.masks[view]
        targets = model.targets(batch, view)
        if model.negatives == "modality":
            masks = {m: masks[m] for m in decoded}
            n_dec = sum(int((masks[m] == MaskValue.DECODER).sum()) for m in decoded)
            loss = modality_patch_discrimination_loss(
                decoded, targets, masks, model.tau, scale_by_tau=model.scale_by_tau
            )
            return loss, n_dec
        pred, owner = _gather(decoded, masks, MaskValue.DECODER)
        tgt, _ = _gather(targets, masks, MaskValue.DECODER)
        loss = patch_discrimination_loss(
            pred, tgt, owner, tau=model.tau, scale_by_tau=model.scale_by_tau
        )
        return loss, int(pred.shape[0])


class PixelReconstruction(Objective):
    """MAE: a pixel head decodes the predictions, scored by MSE against the pixels."""

    uses_target = False

    def build(self, model: LatentMIM) -> dict[str, nn.Module]:
        """The `pixel_head`."""
        cfg = model.encoder_config
        return {"pixel_head": PixelHead(model.modalities, cfg.embed_dim, cfg.max_patch_size)}

    def loss(
        self, model: LatentMIM, batch: MaskedBatch, view: int, decoded: dict[str, Tensor]
    ) -> tuple[Tensor, int]:
        """MSE over the pixels of every DECODER token."""
        masks = batch.masks[view]
        head = model.get_submodule("pixel_head")
        pixels = head(decoded, batch.patch_size)
        targets = patchify(batch.inputs(view), batch.patch_size)
        # pixel patches differ in size between modalities: compare them flattened
        pred = torch.cat([pixels[n][masks[n] == MaskValue.DECODER].flatten() for n in pixels])
        tgt = torch.cat([targets[n][masks[n] == MaskValue.DECODER].flatten() for n in pixels])
        n_dec = sum(int((masks[n] == MaskValue.DECODER).sum()) for n in pixels)
        return mae_loss(pred, tgt), n_dec


OBJECTIVES: dict[str, type[Objective]] = {
    "latent": PatchDiscrimination,
    "mae": PixelReconstruction,
}
"""Short names of the built-in objectives."""

TARGETS: dict[str, type[Target]] = {
    "random_projection": RandomProjectionTarget,
    "ema": EMATarget,
}
"""Short names of the built-in targets."""


class LatentMIM(L.LightningModule):
    """Pretrains a `FlexiEncoder` with latent masked image modelling."""

    def __init__(  # size: one documented argument per hyperparameter, shown by --help
        self,
        modalities: list[str] | None = None,
        encoder: EncoderConfig | None = None,
        predictor_depth: int = 4,
        predictor_dim: int | None = None,
        objective: str = "latent",
        target: str = "random_projection",
        ema_decay: tuple[float, float] = (0.996, 1.0),
        tau: float = 0.1,
        negatives: Literal["modality", "sample"] = "modality",
        scale_by_tau: bool = True,
        contrastive_weight: float = 0.1,
        contrastive_head: bool = True,
        contrastive_symmetric: bool = False,
        variance_weight: float = 0.0,
        covariance_weight: float = 0.0,
        spread_on: Literal["pooled", "tokens"] = "pooled",
        lr: float = 1e-4,
        weight_decay: float = 0.02,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        init_from: str | None = None,
    ) -> None:
        """Build encoder, predictor and target.

        Args:
            modalities: modalities the encoder reads (the CLI links this to the data's).
            encoder: encoder size and options (see configs/model/).
            predictor_depth: transformer blocks in the predictor.
            predictor_dim: predictor width (default: the encoder's).
            objective: `latent` (patch discrimination against targets), `mae` (pixels), or the
                import path of an `Objective` subclass.
            target: `random_projection` (a frozen random projection), `ema` (an EMA encoder),
                or the import path of a `Target` subclass; unused by `mae`.
            ema_decay: (start, end) EMA decay, moved linearly over training.
            tau: temperature of the patch-discrimination and InfoNCE losses.
            negatives: `modality` (negatives from the same modality of the sample, losses summed
                over modalities: the reference) or `sample` (every modality of the sample).
            scale_by_tau: multiply patch discrimination by 2 tau, as the reference does.
            contrastive_weight: weight of InfoNCE between two masked views (needs num_views=2).
            contrastive_head: pass the pooled encodings through a trainable Linear(D, D) before
                InfoNCE, as the reference does (used only for the loss, never exported).
            contrastive_symmetric: average InfoNCE over both directions (reference: a -> b).
            variance_weight: weight of VICReg's variance term on the pooled encodings of
                every view (not in the reference; 0: off).
            covariance_weight: weight of VICReg's covariance term on them (0: off).
            spread_on: what the two terms see: the pooled encodings of every view, or every
                encoded token of every view.
            lr: peak learning rate (AdamW).
            weight_decay: AdamW weight decay (not applied to norms, biases or embeddings).
            betas: AdamW betas.
            warmup_steps: linear warmup steps.
            min_lr_ratio: final learning rate as a fraction of `lr` (cosine schedule).
            init_from: an exported encoder (`encoder.pt`) to start from: its architecture
                replaces `encoder` (but `drop_path`), its weights initialise the encoder.

        """
        super().__init__()
        if not modalities:
            raise ValueError("LatentMIM needs the list of modalities (set model.modalities)")
        self.modalities = list(modalities)
        if isinstance(encoder, dict):  # hyperparameters read back from a checkpoint
            encoder = EncoderConfig(**encoder)
        start = initial_encoder(init_from, encoder or EncoderConfig()) if init_from else None
        self.encoder_config = start.config if start is not None else encoder or EncoderConfig()
        # Plain values only, so checkpoints load with weights_only=True; `_class_path` lets
        # `helios validate/test/predict --ckpt_path` rebuild the model from the checkpoint.
        args = {k: v for k, v in locals().items() if k in _INIT_ARGS}
        self.save_hyperparameters(self._plain_hparams(args))
        self.objective = part_class(objective, Objective, OBJECTIVES)()  # type: ignore[type-abstract]
        self.target = (
            part_class(target, Target, TARGETS)()  # type: ignore[type-abstract]
            if self.objective.uses_target
            else None
        )
        cfg = self.encoder_config
        self.encoder = cfg.build(self.modalities)
        load_initial_weights(self.encoder, start)
        self._build_heads(predictor_depth, predictor_dim, contrastive_head, contrastive_weight)
        self.ema_decay, self.tau = ema_decay, tau
        self.negatives, self.scale_by_tau = negatives, scale_by_tau
        self.contrastive_weight = contrastive_weight
        self.contrastive_symmetric = contrastive_symmetric
        self.variance_weight, self.covariance_weight = variance_weight, covariance_weight
        self.spread_on = spread_on
        self.lr, self.weight_decay, self.betas = lr, weight_decay, betas
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio

    def _build_heads(
        self, predictor_depth: int, predictor_dim: int | None, head: bool, weight: float
    ) -> None:
        """The predictor, the objective's and target's networks and the contrastive head."""
        cfg = self.encoder_config
        self.predictor = Predictor(
            self.modalities,
            encoder_dim=cfg.embed_dim,
            embed_dim=predictor_dim,
            depth=predictor_depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            max_patch_size=cfg.max_patch_size,
        )
        for name, module in self.objective.build(self).items():
            self.add_module(name, module)
        if self.target is not None:
            self.add_module(self.target.attribute, self.target.build(self))
        if head and weight > 0:
            self.contrastive_head = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def _plain_hparams(self, args: dict[str, Any]) -> dict[str, Any]:
        """The init arguments as plain values (lists for tuples, a dict for the encoder)."""
        plain: dict[str, Any] = {"_class_path": class_path(type(self))}
        for name, value in args.items():
            if name == "encoder":
                value = asdict(self.encoder_config)
            elif name == "modalities":
                value = self.modalities
            plain[name] = list(value) if isinstance(value, tuple) else value
        return plain

    # -- objective -----------------------------------------------------------------------------
    @torch.no_grad()
    def targets(self, batch: MaskedBatch, view: int) -> dict[str, Tensor]:
        """The target's per-token targets of a view."""
        if self.target is None:
            raise ValueError(f"{type(self.objective).__name__} has no target")
        network = getattr(self, self.target.attribute)
        return self.target.targets(network, batch, view)

    def _view_loss(self, batch: MaskedBatch, view: int) -> tuple[Tensor, TokensAndMasks, int]:
        encoded = self.encoder(batch, view)
        masks = batch.masks[view]
        decoded = self.predictor(encoded, batch.timestamps, batch.patch_size, masks=masks)
        loss, n_dec = self.objective.loss(self, batch, view, decoded)
        return loss, encoded, n_dec

    def _step(self, batch: MaskedBatch, stage: str) -> Tensor:
        losses, pooled, spread, decoded = [], [], [], 0
        spreading = self.variance_weight > 0 or self.covariance_weight > 0
        for v in range(batch.num_views):
            loss, encoded, n = self._view_loss(batch, v)
            losses.append(loss)
            decoded += n
            pooled.append(encoded.pool("mean"))
            if spreading:
                spread += [pooled[-1]] if self.spread_on == "pooled" else encoded.visible()
        loss = self._log(stage, "mim", torch.stack(losses).mean(), batch, stage == "train")
        if batch.num_views >= 2 and self.contrastive_weight > 0:
            head = getattr(self, "contrastive_head", None)
            a, b = (pooled[0], pooled[1]) if head is None else (head(pooled[0]), head(pooled[1]))
            contrastive = info_nce_loss(a, b, tau=self.tau, symmetric=self.contrastive_symmetric)
            loss = loss + self.contrastive_weight * self._log(
                stage, "contrastive", contrastive, batch
            )
        if spreading:  # on the encodings of every view together
            every = torch.cat(spread)
            for name, weight, term in (
                ("variance", self.variance_weight, variance_loss),
                ("covariance", self.covariance_weight, covariance_loss),
            ):
                if weight > 0:
                    loss = loss + weight * self._log(stage, name, term(every), batch)
        self._log(stage, "", loss, batch, prog_bar=True)
        counts = batch.num_tokens(0)
        self._last_token_counts = {
            "encoded": counts[MaskValue.ENCODER] * batch.num_views,
            "decoded": decoded,
            "target": decoded,
        }
        return loss

    def _log(
        self, stage: str, name: str, value: Tensor, batch: MaskedBatch, prog_bar: bool = False
    ) -> Tensor:
        """Log `<stage>/<name>_loss` (`<stage>/loss` for the total) and return the value."""
        key = f"{stage}/{name}_loss" if name else f"{stage}/loss"
        sync = stage != "train"
        self.log(key, value, prog_bar=prog_bar, batch_size=batch.batch_size, sync_dist=sync)
        return value

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
        """Let the target follow the encoder (EMA) after each optimiser step."""
        if self.target is not None:
            self.target.after_step(self, getattr(self, self.target.attribute))

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


_INIT_ARGS = tuple(inspect.signature(LatentMIM.__init__).parameters)[1:]
