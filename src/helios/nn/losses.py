"""Pretraining losses (always computed in float32, autocast off) and the MAE pixel head.

Each loss equals its counterpart in OlmoEarth's reference implementation (`olmoearth-pretrain`
0.1.2, `train/loss.py`) to float32 rounding on identical tensors, by default; the options that
depart from it are named as such (tests/train/test_loss_fidelity.py checks both against golden
values, docs/training.md lists the differences).

- `patch_discrimination_loss`: PatchDisc (upstream ``PatchDiscriminationLoss``). Each decoded
  token must pick out its own target among the targets of the same sample (other samples are
  masked out, Galileo's ``loss_mask_other_samples``): mean over the tokens of each sample, then
  over the samples that have tokens, times ``2 tau`` as upstream (``scale_by_tau=False`` leaves
  plain cross-entropy, ~log(n) for random inputs). Memory is O(sum n_i^2): samples are padded
  to the largest count and processed in chunks of bounded size, never as an N x N matrix.
- `modality_patch_discrimination_loss`: PatchDisc per modality (negatives only from the same
  modality of the same sample), summed over modalities (upstream
  ``ModalityPatchDiscriminationLoss``, the OlmoEarth v1 recipe's loss).
- `info_nce_loss`: InfoNCE between two pooled views, one direction (a -> b) as upstream's
  ``InfoNCELoss``, or symmetric.
- `variance_loss`, `covariance_loss`: VICReg's variance and covariance terms (Bardes et al.
  2022) on pooled encodings; not in the reference, off by default (`LatentMIM`).
- `mae_loss`, `patchify`, `PixelHead`: the pixel-reconstruction (MAE) alternative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.sample import MaskValue
from helios.nn.patch_embed import downsample_matrix


def select_tokens(
    tokens: dict[str, Tensor], masks: dict[str, Tensor], value: MaskValue = MaskValue.DECODER
) -> tuple[Tensor, Tensor]:
    """Rows of [B, h, w, T, S, D] `tokens` whose mask is `value`, over every modality.

    Returns:
        tokens [N, D] (modality by modality, row-major within) and sample_index long [N].

    """
    rows, index = [], []
    for name, x in tokens.items():
        hit = masks[name] == int(value)
        rows.append(x[hit])
        index.append(hit.nonzero()[:, 0])
    return torch.cat(rows), torch.cat(index)


def patch_discrimination_loss(
    pred: Tensor,
    target: Tensor,
    sample_index: Tensor,
    tau: float = 0.1,
    reduction: Literal["sample", "token"] = "sample",
    scale_by_tau: bool = True,
    max_chunk_logits: int = 2**26,
) -> Tensor:
    """Contrastive loss between predicted and target tokens within each sample.

    Args:
        pred: [N, D] predicted tokens of the whole batch.
        target: [N, D] their targets (same order).
        sample_index: long [N], the sample each token belongs to.
        tau: softmax temperature.
        reduction: ``"sample"``: mean over each sample's tokens, then over samples
            (olmoearth); ``"token"``: mean over all tokens.
        scale_by_tau: multiply by ``2 tau`` as olmoearth/Galileo do (False: plain
            cross-entropy, 1 / (2 tau) times the reference value).
        max_chunk_logits: bound on the logits held at once (chunks of samples).

    Returns:
        A float32 scalar (0 with a zero gradient when N = 0).

    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred = F.normalize(pred.float(), dim=-1)
        target = F.normalize(target.float(), dim=-1)
        n, d = pred.shape
        if n == 0:
            return pred.sum() * 0.0
        order = torch.argsort(sample_index, stable=True)
        pred, target = pred[order], target[order]
        _, counts = torch.unique_consecutive(sample_index[order], return_counts=True)
        groups, n_max = counts.numel(), int(counts.max())
        starts = counts.cumsum(0) - counts
        row = torch.repeat_interleave(torch.arange(groups, device=pred.device), counts)
        slot = torch.arange(n, device=pred.device) - starts[row]
        flat = row * n_max + slot
        p = pred.new_zeros(groups * n_max, d).index_copy(0, flat, pred).view(groups, n_max, d)
        t = target.new_zeros(groups * n_max, d).index_copy(0, flat, target).view(groups, n_max, d)
        valid = torch.arange(n_max, device=pred.device)[None] < counts[:, None]
        step = max(1, max_chunk_logits // (n_max * n_max))
        losses = []
        for i in range(0, groups, step):
            pc, tc, vc = p[i : i + step], t[i : i + step], valid[i : i + step]
            logits = torch.bmm(pc, tc.transpose(1, 2)) / tau
            logits = logits.masked_fill(~vc[:, None, :], float("-inf"))
            positive = (pc * tc).sum(-1) / tau
            ce = torch.logsumexp(logits, dim=-1) - positive
            losses.append(torch.where(vc, ce, torch.zeros_like(ce)).sum(-1))
        per_sample = torch.cat(losses)  # [groups] summed CE
        loss = (per_sample / counts).mean() if reduction == "sample" else per_sample.sum() / n
        return loss * (2 * tau) if scale_by_tau else loss


def modality_patch_discrimination_loss(
    decoded: dict[str, Tensor],
    targets: dict[str, Tensor],
    masks: dict[str, Tensor],
    tau: float = 0.1,
    scale_by_tau: bool = True,
    modality_weights: dict[str, float] | None = None,
) -> Tensor:
    """`patch_discrimination_loss` of each modality's DECODER tokens, summed over modalities.

    Args:
        decoded: predictions [B, h, w, T, S, D] per modality.
        targets: their targets, same shapes.
        masks: int [B, h, w, T, S] `MaskValue`s per modality (the DECODER tokens are scored).
        tau: softmax temperature.
        scale_by_tau: multiply by ``2 tau`` as the reference does.
        modality_weights: optional weight per modality (1 for those it does not name).

    Returns:
        A float32 scalar; a modality without DECODER tokens adds nothing (0 with a zero
        gradient when no modality has any).

    """
    total: Tensor | None = None
    for name, pred in decoded.items():
        hit = masks[name] == int(MaskValue.DECODER)
        if not bool(hit.any()):
            continue
        owner = hit.nonzero()[:, 0]
        loss = patch_discrimination_loss(
            pred[hit], targets[name][hit], owner, tau, scale_by_tau=scale_by_tau
        )
        if modality_weights is not None:
            loss = loss * modality_weights.get(name, 1.0)
        total = loss if total is None else total + loss
    if total is None:
        first = next(iter(decoded.values()))
        return first.float().sum() * 0.0
    return total


def info_nce_loss(z1: Tensor, z2: Tensor, tau: float = 0.1, symmetric: bool = False) -> Tensor:
    """InfoNCE between pooled views [B, D]: sample i of z1 matches sample i of z2.

    One direction (z1 -> z2, cross-entropy over the rows of z1 @ z2.T) as the reference's
    ``InfoNCELoss``; `symmetric` averages both directions (CLIP style).
    """
    with torch.autocast(device_type=z1.device.type, enabled=False):
        a = F.normalize(z1.float(), dim=-1)
        b = F.normalize(z2.float(), dim=-1)
        logits = a @ b.T / tau
        labels = torch.arange(a.shape[0], device=a.device)
        forward = F.cross_entropy(logits, labels)
        if not symmetric:
            return forward
        return 0.5 * (forward + F.cross_entropy(logits.T, labels))


def variance_loss(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """VICReg's variance term: mean over dimensions of relu(gamma - std) across the rows of z.

    Keeps every dimension of the [N, D] encodings spread over the batch, so no few directions
    (overall brightness, say) carry all of the variance.
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        std = torch.sqrt(z.float().var(dim=0) + eps)
        return F.relu(gamma - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """VICReg's covariance term: squared off-diagonal covariances of [N, D] z, summed, over D."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        x = z.float() - z.float().mean(dim=0)
        n, d = x.shape
        cov = x.T @ x / max(n - 1, 1)
        off = cov - torch.diag(torch.diagonal(cov))
        return off.square().sum() / d


def mae_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the entries of `target` that are not `MISSING_VALUE`."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        valid = target != MISSING_VALUE
        diff = torch.where(valid, pred - target, torch.zeros_like(pred))
        return diff.square().sum() / valid.sum().clamp_min(1)


def _band_set_pixels(x: Tensor, name: str) -> Tensor:
    """[..., C] -> [..., S, C_max]: channels of each band set, padded with MISSING_VALUE."""
    spec = get_modality(name)
    slices = spec.band_set_slices()
    c_max = max(s.stop - s.start for s in slices)
    parts = [F.pad(x[..., s], (0, c_max - (s.stop - s.start)), value=MISSING_VALUE) for s in slices]
    return torch.stack(parts, dim=-2)


def patchify(data: dict[str, Tensor], patch_size: int) -> dict[str, Tensor]:
    """Per-token pixel targets [B, h, w, T, S, P] from `MaskedBatch.data`.

    ``P = q * q * C_max`` with ``q = patch_size * pixels_per_ref_pixel`` (1 for non-spatial
    modalities) and C_max the largest band set of the modality, laid out (row, col, channel);
    a band set's unused channels (and missing pixels) hold `MISSING_VALUE`, which `mae_loss`
    skips.
    """
    out = {}
    for name, x in data.items():
        spec = get_modality(name)
        b, hh, ww, t, _ = x.shape
        q = patch_size * spec.pixels_per_ref_pixel if spec.is_spatial else 1
        h, w = hh // q, ww // q
        px = _band_set_pixels(x, name)  # [B, H, W, T, S, Cm]
        s, cm = px.shape[-2:]
        px = px.view(b, h, q, w, q, t, s, cm).permute(0, 1, 3, 5, 6, 2, 4, 7)
        out[name] = px.reshape(b, h, w, t, s, q * q * cm)
    return out


class PixelHead(nn.Module):
    """Maps tokens [B, h, w, T, S, D] to pixel patches matching `patchify` at any patch size.

    Each band set has a base head predicting its (P k) x (P k) patch at the largest patch size
    P; at patch size p the head is composed with the resize ``B = pinv(U)`` from P k to p k
    pixels (`downsample_matrix`), i.e. it predicts the downsampled base patch.
    """

    def __init__(self, modalities: Sequence[str], embed_dim: int, max_patch_size: int = 8) -> None:
        """Create a base head per (modality, band set)."""
        super().__init__()
        self.modalities = tuple(modalities)
        self.embed_dim = embed_dim
        self.max_patch_size = max_patch_size
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for name in self.modalities:
            spec = get_modality(name)
            side = max_patch_size * spec.pixels_per_ref_pixel if spec.is_spatial else 1
            c_max = max(s.stop - s.start for s in spec.band_set_slices())
            w = torch.empty(spec.num_band_sets, embed_dim, side * side, c_max)
            nn.init.trunc_normal_(w, std=1.0 / math.sqrt(embed_dim))
            self.weights[name] = nn.Parameter(w)
            self.biases[name] = nn.Parameter(torch.zeros(spec.num_band_sets, c_max))
        self._resize: dict[tuple[int, int, str], Tensor] = {}

    def _matrix(self, src: int, dst: int, like: Tensor) -> Tensor:
        key = (src, dst, str(like.device))
        if key not in self._resize:
            self._resize[key] = downsample_matrix(src, dst).to(like.device, torch.float32)
        return self._resize[key].to(like.dtype)

    def forward(self, tokens: dict[str, Tensor], patch_size: int) -> dict[str, Tensor]:
        """Pixel predictions [B, h, w, T, S, q*q*C_max] per modality of `self.modalities`."""
        out = {}
        for name in self.modalities:
            if name not in tokens:
                continue
            spec = get_modality(name)
            w = self.weights[name]
            if spec.is_spatial and patch_size != self.max_patch_size:
                k = spec.pixels_per_ref_pixel
                resize = self._matrix(self.max_patch_size * k, patch_size * k, w)
                w = torch.einsum("sdrc,qr->sdqc", w, resize)
            s, _, qq, cm = w.shape
            bias = self.biases[name][:, None, :].expand(s, qq, cm).reshape(s, qq * cm)
            x = tokens[name]
            pred = torch.einsum("...sd,sdo->...so", x, w.flatten(2).to(x.dtype))
            out[name] = pred + bias.to(pred.dtype)
        return out
