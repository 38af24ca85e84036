"""`helios sweep report`: best setting per (model, task, protocol) by validation, its test score."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

RESULTS = "results.json"


def collect(sweep_dir: Path | str) -> list[dict[str, Any]]:
    """Every finished run's results.json under `sweep_dir`."""
    out = []
    for path in sorted(Path(sweep_dir).rglob(RESULTS)):
        try:
            out.append(json.loads(path.read_text()) | {"_path": str(path.parent)})
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: unreadable results ({err})") from None
    return out


def best_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, task, protocol): the run with the best validation score, with its test score."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        # results.json names the protocol at the top; older files only in their config
        groups[(r["model"], r["task"], str(r.get("protocol", r["config"]["protocol"])))].append(r)
    rows = []
    for (model, task, protocol), runs in sorted(groups.items()):
        metric = runs[0]["primary_metric"]
        best = max(runs, key=lambda r: (r["val"].get(metric, float("-inf")), -len(r["_path"])))
        cfg = best["config"]
        rows.append(
            {
                "model": model,
                "task": task,
                "protocol": protocol,
                "metric": metric,
                "val": round(float(best["val"].get(metric, float("nan"))), 4),
                "test": round(float(best["test"].get(metric, float("nan"))), 4),
                "runs": len(runs),
                "lr": cfg.get("lr"),
                "normalization": cfg.get("normalization"),
                "pooling": cfg.get("pooling"),
                "run": Path(best["_path"]).name,
            }
        )
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of `best_rows`."""
    cols = [
        "model",
        "task",
        "protocol",
        "metric",
        "val",
        "test",
        "runs",
        "lr",
        "normalization",
        "pooling",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """A grouped bar chart of test scores: tasks (and protocols) on x, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["task"], r["protocol"]) for r in rows})
    models = sorted({r["model"] for r in rows})
    score = {(r["model"], r["task"], r["protocol"]): r["test"] for r in rows}
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys) * max(1, len(models)) / 2), 4))
    for i, model in enumerate(models):
        xs = [k + i * width for k in range(len(keys))]
        ys = [score.get((model, *key), 0.0) for key in keys]
        ax.bar(xs, ys, width, label=model)
    ax.set_xticks([k + width * (len(models) - 1) / 2 for k in range(len(keys))])
    ax.set_xticklabels([f"{t}\n{p}" for t, p in keys], fontsize=8)
    ax.set_ylabel("test score (primary metric)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Best validation setting per model and task")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(sweep_dir: Path | str) -> dict[str, Path]:
    """Write results.csv, results.md and results.png into `sweep_dir`."""
    sweep_dir = Path(sweep_dir)
    results = collect(sweep_dir)
    if not results:
        raise ValueError(f"{sweep_dir}: no finished runs (no {RESULTS} files)")
    rows = best_rows(results)
    csv_path = sweep_dir / "results.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    md = sweep_dir / "results.md"
    md.write_text(to_markdown(rows))
    return {"csv": csv_path, "markdown": md, "chart": plot(rows, sweep_dir / "results.png")}
