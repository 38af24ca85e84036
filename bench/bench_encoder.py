"""Encoder training throughput: Helios `FlexiEncoder` next to olmoearth-pretrain's `Encoder`.

Both encoders get the same batch: sentinel2_l2a (3 band sets) + sentinel1 + landsat (2), i.e.
6 tokens per (position, timestep); with a 32 px crop at patch size 4 (8 x 8 positions) and 6
timesteps that is 2304 tokens per sample, of which `--encode-ratio` (50 %) are ENCODER tokens
and the rest DECODER. Each timed step is forward + backward of the encoder in training mode;
timings of the two models are interleaved so background load hits both alike, and the best
(minimum) step time is reported, every step time printed too. The peer is the PyPI package
(`pip install --no-deps olmoearth-pretrain einops universal-pathlib fsspec`); without it only
Helios is measured.

    python bench/bench_encoder.py                       # CPU, nano and base
    python bench/bench_encoder.py --device cuda --sizes nano base large --batch-size 64

On CUDA the step runs under bf16 autocast and the table adds MFU: model FLOPs
(6 x transformer parameters x encoded tokens + 12 x depth x width x sum of n_i^2 for attention)
over a measured dense bf16 matmul peak.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

# olmoearth-pretrain ships a `helios` compatibility package of its own, so `make bench` installs
# it into .bench-peer/ and it goes at the END of sys.path, after our helios is imported.
_PEER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".bench-peer")

from helios.data.masking import SpaceTimeMasking  # noqa: E402
from helios.data.modalities import get_modality  # noqa: E402
from helios.data.sample import MaskedBatch, MaskValue  # noqa: E402
from helios.nn.encoder import FlexiEncoder, TokenPacker  # noqa: E402

SIZES = {
    "nano": (128, 4, 8),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
MODALITIES = ("sentinel2_l2a", "sentinel1", "landsat")
CPU_BATCH = {"nano": 8, "tiny": 4, "small": 4, "base": 2, "large": 1}


@dataclass
class Inputs:
    """One benchmark batch for both models."""

    helios: MaskedBatch
    peer: Any
    tokens_per_sample: int
    encoded_per_sample: float
    sum_sq_encoded: int


def token_masks(
    batch: int, side: int, timesteps: int, ratio: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random token masks: round(N * ratio) ENCODER tokens per sample, the rest DECODER."""
    shapes = {m: (side, side, timesteps, get_modality(m).num_band_sets) for m in MODALITIES}
    sizes = [int(np.prod(s)) for s in shapes.values()]
    total = sum(sizes)
    out = {m: np.empty((batch, *s), dtype=np.int8) for m, s in shapes.items()}
    for b in range(batch):
        flat = np.full(total, int(MaskValue.DECODER), dtype=np.int8)
        flat[rng.permutation(total)[: round(total * ratio)]] = int(MaskValue.ENCODER)
        for (m, s), part in zip(shapes.items(), np.split(flat, np.cumsum(sizes)[:-1])):
            out[m][b] = part.reshape(s)
    return out


def make_inputs(
    batch: int, crop: int, timesteps: int, patch: int, ratio: float, device: str, with_peer: bool
) -> Inputs:
    """Random data and masks, as a Helios MaskedBatch and an olmoearth MaskedOlmoEarthSample."""
    rng = np.random.default_rng(0)
    side = crop // patch
    masks = token_masks(batch, side, timesteps, ratio, rng)
    data = {
        m: torch.randn(batch, crop, crop, timesteps, get_modality(m).num_bands) for m in MODALITIES
    }
    months = torch.arange(timesteps) % 12 + 1
    stamps = torch.stack([torch.full_like(months, 15), months, torch.full_like(months, 2021)], -1)
    stamps = stamps.expand(batch, timesteps, 3).clone()
    helios = MaskedBatch(
        data=data,
        masks=[{m: torch.from_numpy(v) for m, v in masks.items()}],
        timestamps=stamps,
        latlon=torch.zeros(batch, 2),
        patch_size=patch,
    ).to(device)
    peer = None
    if with_peer:
        from olmoearth_pretrain.datatypes import MaskedOlmoEarthSample

        fields: dict[str, torch.Tensor] = {}
        for m in MODALITIES:
            pixel = torch.from_numpy(masks[m]).float()  # masks live on the pixel grid there
            pixel = pixel.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
            fields[m] = data[m].to(device)
            fields[f"{m}_mask"] = pixel.to(device)
        zero_based = stamps.clone()
        zero_based[..., 1] -= 1  # olmoearth months are 0..11
        peer = MaskedOlmoEarthSample(timestamps=zero_based.to(device), **fields)
    enc = np.stack([(v == 0).reshape(batch, -1).sum(1) for v in masks.values()]).sum(0)
    return Inputs(
        helios=helios,
        peer=peer,
        tokens_per_sample=sum(int(np.prod(v.shape[1:])) for v in masks.values()),
        encoded_per_sample=float(enc.mean()),
        sum_sq_encoded=int((enc.astype(np.int64) ** 2).sum()),
    )


def realistic_padding(
    batch: int, crop: int, timesteps: int, patch: int
) -> tuple[float, float, float]:
    """Padding of the attention layout on a batch with missing data.

    Each multitemporal modality misses each timestep with probability 0.3 (landsat 0.5) and
    SpaceTimeMasking(0.5, 0.5) masks every sample, as the datamodule would. Returns the padded
    share of slots, the share of attention-core work spent on padding (1 - sum n_i^2 /
    (B N_max^2)) and the mean ENCODER tokens per sample.
    """
    rng = np.random.default_rng(1)
    side = crop // patch
    strategy = SpaceTimeMasking(encode_ratio=0.5, decode_ratio=0.5)
    per_sample: list[dict[str, np.ndarray]] = []
    for _ in range(batch):
        tokens = {}
        for m in MODALITIES:
            s = get_modality(m).num_band_sets
            miss = rng.random(timesteps) < (0.5 if m == "landsat" else 0.3)
            tok = np.zeros((side, side, timesteps, s), dtype=np.int8)
            tok[:, :, miss] = int(MaskValue.MISSING)
            tokens[m] = tok
        per_sample.append(strategy(tokens, rng))
    masks = {m: torch.from_numpy(np.stack([p[m] for p in per_sample])) for m in MODALITIES}
    packer = TokenPacker(masks, [MaskValue.ENCODER])
    counts = packer.counts.double()
    attention_waste = 1.0 - float((counts**2).sum()) / (batch * packer.packing.n_max**2)
    return packer.padding_fraction, attention_waste, float(counts.mean())


def helios_step(model: FlexiEncoder, inputs: Inputs, amp: bool) -> Callable[[], None]:
    """One forward + backward of Helios."""

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(inputs.helios)
            loss = sum(t.float().mean() for t in out.tokens.values())
        loss.backward()  # type: ignore[union-attr]
        model.zero_grad(set_to_none=True)

    return step


def peer_step(model: nn.Module, inputs: Inputs, patch: int, amp: bool) -> Callable[[], None]:
    """One forward + backward of the olmoearth encoder."""

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(inputs.peer, patch_size=patch)["tokens_and_masks"]
            loss = sum(getattr(out, m).float().mean() for m in MODALITIES)
        loss.backward()  # type: ignore[union-attr]
        model.zero_grad(set_to_none=True)

    return step


def build_peer(dim: int, depth: int, heads: int) -> nn.Module:
    """olmoearth-pretrain's Encoder at the same width, depth and heads."""
    from olmoearth_pretrain.nn.flexi_vit import EncoderConfig

    cfg = EncoderConfig(
        supported_modality_names=list(MODALITIES),
        embedding_size=dim,
        max_patch_size=8,
        num_heads=heads,
        mlp_ratio=4.0,
        depth=depth,
        drop_path=0.0,
    )
    return cfg.build()


def timed(
    steps: dict[str, Callable[[], None]], warmup: int, iters: int, device: str
) -> dict[str, float]:
    """Best (minimum) seconds per step of each model, runs interleaved.

    The minimum estimates the intrinsic cost on a machine shared with other work (background
    load only ever adds time); interleaving exposes both models to the same conditions.
    """

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        for fn in steps.values():
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(iters):
        for name, fn in steps.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        spread = ", ".join(f"{t:.3f}" for t in ts)
        print(f"  {name}: step seconds {spread} (median {statistics.median(ts):.3f})")
    return {k: min(v) for k, v in times.items()}


def matmul_peak(device: str) -> float:
    """Measured dense matmul FLOP/s (best of several): bf16 8192^3 on CUDA, fp32 2048^3 on CPU."""
    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 10 if device == "cuda" else 1
    best = float("inf")
    for _ in range(8 if device == "cuda" else 20):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n**3 / best


def model_flops(model: FlexiEncoder, inputs: Inputs, batch: int) -> float:
    """FLOPs of one forward + backward: 6 N_params tokens + 12 L D sum(n_i^2) attention."""
    params = sum(p.numel() for p in model.blocks.parameters())
    tokens = inputs.encoded_per_sample * batch
    return 6 * params * tokens + 12 * len(model.blocks) * model.embed_dim * inputs.sum_sq_encoded


def hardware(device: str) -> str:
    """One line describing the machine."""
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} | torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    threads = f"{torch.get_num_threads()} threads (os.cpu_count={os.cpu_count()})"
    return f"{cpu}, {threads} | torch {torch.__version__}"


if os.path.isdir(_PEER) and _PEER not in sys.path:
    sys.path.append(_PEER)


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["nano", "base"], choices=list(SIZES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: CPU_BATCH / 32")
    parser.add_argument("--crop", type=int, default=32, help="crop side in 10 m pixels")
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--timesteps", type=int, default=6)
    parser.add_argument("--encode-ratio", type=float, default=0.5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-peer", action="store_true", help="measure Helios only")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    amp = args.device == "cuda"
    with_peer = not args.no_peer
    if with_peer:
        try:
            import olmoearth_pretrain  # noqa: F401
        except ImportError:
            print("olmoearth-pretrain not installed: measuring Helios only")
            with_peer = False

    print(f"hardware: {hardware(args.device)}")
    peak = matmul_peak(args.device)
    print(f"measured matmul peak: {peak / 1e12:.2f} TFLOP/s ({'bf16' if amp else 'fp32'})")
    pad, waste, mean_enc = realistic_padding(32, args.crop, args.timesteps, args.patch_size)
    print(
        f"realistic batch (32 samples, missing timesteps, SpaceTimeMasking 0.5, "
        f"{mean_enc:.0f} encoded tokens/sample): padding is {100 * pad:.1f} % of the attention "
        f"slots and {100 * waste:.1f} % of the attention-core work; per-token layers see none"
    )
    rows = []
    for size in args.sizes:
        dim, depth, heads = SIZES[size]
        batch = args.batch_size or (CPU_BATCH[size] if args.device == "cpu" else 32)
        inputs = make_inputs(
            batch,
            args.crop,
            args.timesteps,
            args.patch_size,
            args.encode_ratio,
            args.device,
            with_peer,
        )
        ours = FlexiEncoder(MODALITIES, dim, depth, heads).to(args.device).train()
        steps = {"helios": helios_step(ours, inputs, amp)}
        if with_peer:
            peer = build_peer(dim, depth, heads).to(args.device).train()
            steps["olmoearth"] = peer_step(peer, inputs, args.patch_size, amp)
        print(f"{size}: batch {batch}")
        secs = timed(steps, args.warmup, args.iters, args.device)
        flops = model_flops(ours, inputs, batch)
        for name, s in secs.items():
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "tokens": inputs.tokens_per_sample,
                    "encoded": inputs.encoded_per_sample,
                    "batch": batch,
                    "tok_s": batch * inputs.tokens_per_sample / s,
                    "enc_s": batch * inputs.encoded_per_sample / s,
                    "ratio": secs.get("olmoearth", float("nan")) / secs["helios"],
                    "mfu": flops / s / peak,
                    "step": s,
                }
            )
    mfu = "MFU" if amp else "share of fp32 matmul peak"
    print()
    print(
        "| model | size | tokens/sample (encoded) | batch | step s | fwd+bwd tokens/s "
        f"| encoded tokens/s | Helios/peer | {mfu} |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["model"] == "helios" and r["ratio"] == r["ratio"] else ""
        print(
            f"| {r['model']} | {r['size']} | {r['tokens']} ({r['encoded']:.0f}) | {r['batch']} "
            f"| {r['step']:.3f} | {r['tok_s']:,.0f} | {r['enc_s']:,.0f} | {ratio} "
            f"| {100 * r['mfu']:.1f} % |"
        )


if __name__ == "__main__":
    main()
