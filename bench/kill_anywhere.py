"""Kill every long-running Helios step at random points; a re-run must end as if never killed.

Each case prepares small inputs with the repository's own generators (`helios data demo`,
`helios.data.synthetic`, `tests/runner/data/project.py`), runs its command once uninterrupted
(the reference) and then, per trial, in a fresh copy of the inputs: starts the command in a
new session, SIGKILLs its whole process group (`os.killpg`, so worker processes die too) after
a random fraction of the reference's duration, possibly several times, and finally runs it to
completion. The outputs are compared with the reference's file by file: H5 datasets, raster
pixels and georeferencing, checkpoint tensors, JSON without its timing fields, other files
byte for byte. Temporary files a kill left behind are listed apart.

Cases: convert, stats, fit, sweep, build, inference, postprocess, finetune (all its steps),
finetune-build and finetune-train (that step alone, the earlier ones done).

Usage: python bench/kill_anywhere.py [--cases fit,sweep] [--trials 3] [--max-kills 2]
           [--seed 0] [--work DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the generators under tests/
VOLATILE = frozenset({"seconds", "elapsed", "duration", "sha256"})
"""JSON keys (and CSV columns) that differ between any two runs: wall-clock times, and file
hashes of torch files (their bytes carry the temporary file's name, `.<name>.<pid>`, as the
archive's folder; the files themselves are compared by content)."""
TIMEOUT = 900.0


@dataclass
class Case:
    """One command to kill: how to prepare its inputs, run it, and which outputs to compare."""

    name: str
    prepare: Callable[[Path, Path], None]
    """(case folder, shared folder): write the inputs (and earlier steps' results)."""
    command: list[str]
    """Run with the case folder as working directory; paths in it are relative to it."""
    outputs: list[str]
    """Glob patterns (relative to the case folder) of the files compared."""
    exclude: tuple[str, ...] = ()
    """Path fragments of files that are not outputs (logs, resume checkpoints)."""


@dataclass
class Trial:
    """One trial of a case: its kills and whether its outputs matched the reference."""

    kills: list[float] = field(default_factory=list)
    """Seconds after the start at which a kill landed (the process was still running)."""
    missed: int = 0
    """Planned kills that came after the process had already finished."""
    identical: bool = False
    differences: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


def helios(*args: str) -> list[str]:
    """The command line of `helios ARGS` in this interpreter."""
    return [sys.executable, "-m", "helios.cli", *args]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": "0"}


def run_to_end(cwd: Path, command: list[str]) -> float:
    """Run `command` in `cwd` to completion (it must succeed); its wall time in seconds."""
    start = time.monotonic()
    proc = subprocess.run(
        command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(
            f"`{' '.join(command[2:])}` failed in {cwd} ({proc.returncode}):\n{tail}"
        )
    return time.monotonic() - start


def kill_after(cwd: Path, command: list[str], delay: float) -> bool:
    """Start `command` in a new session; SIGKILL its process group after `delay` seconds.

    Returns whether the kill landed (False: the command had finished before).
    """
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    if code != 0:
        raise RuntimeError(f"`{' '.join(command[2:])}` failed in {cwd} ({code}) before the kill")
    return False


# -- digests --------------------------------------------------------------------------------


def _plain(value: Any, work: str) -> Any:
    """A JSON-like value with timing keys dropped and the case folder's path replaced."""
    import torch

    if isinstance(value, dict):
        return {str(k): _plain(v, work) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                if k not in VOLATILE}  # fmt: skip
    if isinstance(value, (list, tuple)):
        return [_plain(v, work) for v in value]
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        return f"{t.dtype}{list(t.shape)}:{hashlib.sha256(raw).hexdigest()}"
    if isinstance(value, str):
        return value.replace(work, "<work>")
    return value


def _h5_digest(path: Path) -> str:
    import h5py

    h = hashlib.sha256()

    def visit(name: str, obj: Any) -> None:
        h.update(name.encode())
        if isinstance(obj, h5py.Dataset):
            arr = np.ascontiguousarray(obj[()])
            h.update(f"{arr.dtype}{arr.shape}".encode() + arr.tobytes())
        for key in sorted(obj.attrs):
            h.update(f"{key}={obj.attrs[key]!r}".encode())

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return h.hexdigest()


def _raster_digest(path: Path) -> str:
    import warnings

    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as src:
            head = f"{src.crs}|{src.transform}|{src.dtypes}|{src.nodata}|{src.shape}"
            data = src.read()
    return hashlib.sha256(head.encode() + np.ascontiguousarray(data).tobytes()).hexdigest()


def _csv_digest(text: str) -> str:
    rows = list(csv.DictReader(io.StringIO(text)))
    return json.dumps([{k: v for k, v in r.items() if k not in VOLATILE} for r in rows])


def digest(path: Path, work: Path) -> str:
    """What of `path` must match between runs, as a string."""
    suffix = path.suffix.lower()
    if suffix == ".h5":
        return _h5_digest(path)
    if suffix in (".tif", ".tiff", ".png"):
        return _raster_digest(path)
    if suffix in (".pt", ".ckpt", ".pth"):
        from helios.checkpoint import load_checkpoint

        return json.dumps(_plain(load_checkpoint(path), str(work)), sort_keys=True)
    if suffix == ".json":
        return json.dumps(_plain(json.loads(path.read_text()), str(work)), sort_keys=True)
    if suffix == ".csv":
        return _csv_digest(path.read_text().replace(str(work), "<work>"))
    data = path.read_bytes()
    return hashlib.sha256(data.replace(str(work).encode(), b"<work>")).hexdigest()


def _is_temporary(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".") or name.endswith((".tmp", ".partial")) or ".tmp" in name


def collect(work: Path, case: Case) -> dict[str, str]:
    """The digests of `case`'s outputs under `work`, by relative path."""
    found: dict[str, str] = {}
    for pattern in case.outputs:
        for path in sorted(work.glob(pattern)):
            rel = path.relative_to(work).as_posix()
            if path.is_file() and not any(x in rel for x in case.exclude):
                found[rel] = digest(path, work)
    return found


def compare(ref: dict[str, str], got: dict[str, str]) -> tuple[list[str], list[str]]:
    """Differences between two digest maps, and temporary files only `got` has (leftovers)."""
    extra = sorted(got.keys() - ref.keys())
    leftovers = [k for k in extra if _is_temporary(k)]
    out = [f"missing {k}" for k in sorted(ref.keys() - got.keys())]
    out += [f"extra {k}" for k in extra if k not in leftovers]
    out += [f"differs {k}" for k in sorted(ref.keys() & got.keys()) if ref[k] != got[k]]
    return out, leftovers


# -- cases ----------------------------------------------------------------------------------


def prepare_shared(shared: Path) -> None:
    """Inputs several cases read: the demo dataset, a synthetic H5 set, a tiny encoder."""
    from helios.data.synthetic import make_synthetic_dataset
    from tests.runner.data.model import tiny_encoder

    if not (shared / "demo" / "labels").is_dir():
        run_to_end(shared, helios("data", "demo", "--out", "demo", "--workers", "2",
                                  "--no-progress"))  # fmt: skip
    if not (shared / "syn").is_dir():
        mods = ("sentinel2_l2a", "sentinel1", "srtm")
        make_synthetic_dataset(shared / "syn", 24, size=32, num_timesteps=3, modalities=mods)
    if not (shared / "encoder.pt").is_file():
        tiny_encoder(shared / "encoder.pt", ("sentinel2", "landsat"), patch_size=8)


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True) if src.is_dir() else shutil.copy2(src, dst)


def prep_convert(case: Path, shared: Path) -> None:
    """12 raw tiles of the demo (both scenes)."""
    tiles = sorted((shared / "demo" / "raw").iterdir())
    for tile in tiles[:6] + tiles[-6:]:
        _copy(tile, case / "raw" / tile.name)


def prep_stats(case: Path, shared: Path) -> None:
    """The demo's converted H5 dataset."""
    _copy((shared / "demo" / "h5").resolve(), case / "h5")


def prep_fit(case: Path, shared: Path) -> None:
    """The synthetic set and a tiny model: 12 steps, validation every 3, checkpoints every 2."""
    import yaml

    _copy(shared / "syn", case / "syn")
    h5_dir = next(p.parent for p in (case / "syn").rglob("sample_metadata.csv"))
    cfg = {
        "model": {"init_args": {"encoder": {"embed_dim": 32, "depth": 2, "num_heads": 4},
                                "predictor_depth": 1, "warmup_steps": 2}},
        "data": {"init_args": {"h5_dir": str(h5_dir.relative_to(case)), "norm_stats": None,
                               "batch_size": 4, "crop_tokens": [2, 4], "patch_sizes": [2, 4, 8],
                               "val_samples": 4, "num_workers": 0}},
        "trainer": {"logger": False, "enable_progress_bar": False, "accelerator": "cpu",
                    "devices": 1, "max_steps": 12, "val_check_interval": 3},
    }  # fmt: skip
    (case / "tiny.yaml").write_text(yaml.safe_dump(cfg))


def prep_sweep(case: Path, shared: Path) -> None:
    """A tiny encoder on the demo cloud task: one kNN and two linear-probe runs."""
    import yaml

    sweep = {
        "name": "kill",
        "output": "sweep",
        "models": [{"kind": "helios", "path": str(shared / "encoder.pt"), "name": "tiny"}],
        "tasks": [{"name": "demo-cloud-tiles", "root": str(shared / "demo"),
                   "protocols": ["knn", "linear_probe"]}],
        "grid": {"lr": [0.001, 0.01]},
        "settings": {"epochs": 3, "batch_size": 32},
    }  # fmt: skip
    (case / "sweep.yaml").write_text(yaml.safe_dump(sweep))


def _project(case: Path) -> None:
    from tests.runner.data.model import tiny_encoder, write_model_files
    from tests.runner.data.project import make_project

    make_project(case / "project")
    write_model_files(case / "project", tiny_encoder(case / "encoder.pt"), "segmentation", 3)


RUN = ("project", "--scratch", "scratch")
PREDICT = helios("run", "predict", *RUN, "--device", "cpu", "--no-progress", "--workers", "2")


def prep_build(case: Path, shared: Path) -> None:
    """The generated runner project, partitioned."""
    _project(case)
    run_to_end(case, helios("run", "partition", *RUN))


def prep_inference(case: Path, shared: Path) -> None:
    """The generated runner project, partitioned and built."""
    prep_build(case, shared)
    run_to_end(case, [*PREDICT, "--steps", "build"])


def prep_postprocess(case: Path, shared: Path) -> None:
    """The generated runner project, partitioned, built and predicted."""
    prep_inference(case, shared)
    run_to_end(case, [*PREDICT, "--steps", "inference"])


def prep_finetune(case: Path, shared: Path) -> None:
    """The generated fine-tuning project (a polygon export of 3 tasks, a tiny encoder)."""
    from tests.runner.data.model import tiny_encoder
    from tests.runner.test_finetune import finetune_project

    encoder = tiny_encoder(case / "encoder.pt", ["sentinel2_l2a"], patch_size=4)
    finetune_project(case / "project", encoder)


FINETUNE = helios("run", "finetune", *RUN, "--max-epochs", "4", "--accelerator", "cpu")
FINETUNE += ["--workers", "2", "--no-progress"]


def prep_finetune_build(case: Path, shared: Path) -> None:
    """The fine-tuning project with its labeled windows prepared."""
    prep_finetune(case, shared)
    run_to_end(case, [*FINETUNE, "--steps", "prepare"])


def prep_finetune_train(case: Path, shared: Path) -> None:
    """The fine-tuning project with its labeled windows prepared and built."""
    prep_finetune_build(case, shared)
    run_to_end(case, [*FINETUNE, "--steps", "build"])


BASE_CONFIG = str(ROOT / "configs" / "latent_mim.yaml")
FIT = helios("fit", "--config", BASE_CONFIG, "--config", "tiny.yaml")
FIT += ["--trainer.default_root_dir", "run", "--checkpoint_every", "2"]
FINETUNE_OUT = ["project/checkpoint.ckpt", "scratch/**/*"]
NOT_OUT = ("finetune/checkpoints/", "finetune/logs/")
"""Resume checkpoints and the CSV logs (a resumed run logs its epochs again) are no outputs."""
CASES = {
    "convert": Case("convert", prep_convert, helios("data", "convert", "raw", "--out", "out",
                    "--workers", "2", "--no-progress"), ["out/**/*"]),  # fmt: skip
    "stats": Case("stats", prep_stats, helios("data", "stats", "h5", "--out", "stats.json",
                  "--workers", "2", "--no-progress"), ["stats.json"]),  # fmt: skip
    "fit": Case("fit", prep_fit, FIT, ["run/encoder.pt"]),
    "sweep": Case("sweep", prep_sweep, helios("sweep", "sweep.yaml"), ["sweep/**/*"],
                  exclude=("log.txt", "results.png")),
    "build": Case("build", prep_build, helios("run", "build", *RUN, "--workers", "2",
                  "--no-progress"), ["scratch/**/*"]),  # fmt: skip
    "inference": Case("inference", prep_inference, [*PREDICT, "--steps", "inference"],
                      ["scratch/**/*"]),
    "postprocess": Case("postprocess", prep_postprocess,
                        [*PREDICT, "--steps", "postprocess,combine"], ["scratch/**/*"]),
    "finetune": Case("finetune", prep_finetune, FINETUNE, FINETUNE_OUT, exclude=NOT_OUT),
    "finetune-build": Case("finetune-build", prep_finetune_build,
                           [*FINETUNE, "--steps", "build"], ["scratch/**/*"]),
    "finetune-train": Case("finetune-train", prep_finetune_train,
                           [*FINETUNE, "--steps", "train"], FINETUNE_OUT, exclude=NOT_OUT),
}  # fmt: skip


# -- driver ---------------------------------------------------------------------------------


def killed_trial(
    case: Case, base: Path, where: Path, duration: float, max_kills: int, rng: random.Random
) -> Trial:
    """Kill `case` 1 to `max_kills` times in a copy of `base`, then run it to the end.

    Kill times are drawn from 15-95% of the reference's duration. When no kill landed (the
    machine ran faster than for the reference), the trial starts over with times half as
    long, up to three times.
    """
    scale = 1.0
    for _ in range(3):
        shutil.rmtree(where, ignore_errors=True)
        _copy(base, where)
        trial = Trial()
        for _ in range(rng.randint(1, max_kills)):
            delay = duration * scale * rng.uniform(0.15, 0.95)
            if kill_after(where, case.command, delay):
                trial.kills.append(round(delay, 2))
            else:
                trial.missed += 1
        if trial.kills:
            break
        scale /= 2
    run_to_end(where, case.command)
    return trial


def run_case(
    case: Case, work: Path, shared: Path, trials: int, max_kills: int, rng: random.Random
) -> dict[str, Any]:
    """The reference run, then `trials` killed-and-resumed runs, each compared with it.

    Every run happens in the same folder (`<case>/run`, moved aside afterwards), so paths
    that steps record, and the fingerprints and hashes made of them, agree between runs.
    """
    folder = work / case.name
    shutil.rmtree(folder, ignore_errors=True)
    run, base = folder / "run", folder / "base"
    run.mkdir(parents=True)
    case.prepare(run, shared)
    _copy(run, base)
    duration = run_to_end(run, case.command)
    reference = collect(run, case)
    run.rename(folder / "reference")
    if not reference:
        raise RuntimeError(f"{case.name}: the reference run wrote none of {case.outputs}")
    results: list[Trial] = []
    for i in range(trials):
        trial = killed_trial(case, base, run, duration, max_kills, rng)
        got = collect(run, case)
        run.rename(folder / f"trial{i}")
        trial.differences, trial.leftovers = compare(reference, got)
        trial.identical = not trial.differences
        results.append(trial)
        verdict = "identical" if trial.identical else trial.differences[:3]
        print(f"  {case.name} trial {i}: kills at {trial.kills} s, {verdict}", flush=True)
    return {
        "case": case.name,
        "command": " ".join(case.command[2:]),
        "reference_seconds": round(duration, 1),
        "outputs": len(reference),
        "trials": [vars(t) for t in results],
        "kills": sum(len(t.kills) for t in results),
        "identical": sum(t.identical for t in results),
    }


def table(summaries: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = [
        "| case | outputs compared | reference (s) | trials | kills landed | identical | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        notes = sorted({d for t in s["trials"] for d in t["differences"]})[:3]
        left = sorted({f for t in s["trials"] for f in t["leftovers"]})[:2]
        note = "; ".join(notes + [f"left behind: {f}" for f in left]) or ""
        lines.append(
            f"| {s['case']} | {s['outputs']} | {s['reference_seconds']} | {len(s['trials'])} "
            f"| {s['kills']} | {s['identical']}/{len(s['trials'])} | {note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases; print the table; exit 1 if any trial's outputs differ."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--trials", type=int, default=3, help="killed runs per case")
    parser.add_argument("--max-kills", type=int, default=2, help="kills per trial (1 to N)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(CASES)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="helios-kill-"))
    shared = work / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    prepare_shared(shared)
    rng = random.Random(args.seed)
    summaries = []
    for name in args.cases.split(","):
        print(f"{name}: {' '.join(CASES[name].command[2:])}", flush=True)
        summaries.append(run_case(CASES[name], work, shared, args.trials, args.max_kills, rng))
    print(table(summaries))
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2) + "\n")
    return 0 if all(s["identical"] == len(s["trials"]) for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
