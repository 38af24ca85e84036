"""`helios sweep report`: best setting per (model, task, protocol) by validation, its test score."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


METRIC_LABELS = {
    "miou": "mIoU (mean intersection over union)",
    "accuracy": "accuracy (fraction correct)",
    "f1_micro": "micro F1",
}
"""How the chart names each primary metric on its y axis."""


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Save `chart(rows)` as a PNG at `path`."""
    import matplotlib.pyplot as plt

    fig = chart(rows)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def chart(rows: list[dict[str, Any]]) -> Figure:
    """A bar chart of test scores: one panel per metric, (task, protocol) on x, a bar per model.

    Scores of different metrics (mIoU, accuracy) never share an axis; every bar is labelled with
    its value, and every panel's y axis names its metric.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({r["metric"] for r in rows})
    models = sorted({r["model"] for r in rows})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    panels = [
        (m, sorted({(r["task"], r["protocol"]) for r in rows if r["metric"] == m})) for m in metrics
    ]
    widths = [max(1, len(keys)) for _, keys in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(6.0, 1.2 * sum(widths) * max(1, len(models)) / 2 + 2), 4.5),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    score = {(r["model"], r["task"], r["protocol"]): r["test"] for r in rows}
    width = 0.8 / max(1, len(models))
    for ax, (metric, keys) in zip(axes[0], panels):
        for i, model in enumerate(models):
            xs = [k + i * width for k in range(len(keys))]
            ys = [score.get((model, *key)) for key in keys]
            shown = [(x, y) for x, y in zip(xs, ys) if y is not None]
            bars = ax.bar([x for x, _ in shown], [y for _, y in shown], width, color=colours[model])
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
        ax.set_xticks([k + width * (len(models) - 1) / 2 for k in range(len(keys))])
        ax.set_xticklabels([f"{t}\n{p}" for t, p in keys], fontsize=8)
        ax.set_ylabel(f"test {METRIC_LABELS.get(metric, metric)}")
        ax.set_ylim(0, 1.08)
        ax.set_title(METRIC_LABELS.get(metric, metric).split(" (")[0], fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in models]
    fig.legend(handles, models, loc="lower center", ncol=min(4, len(models)), fontsize=8)
    fig.suptitle("Test score at the best validation setting", fontsize=11)
    fig.tight_layout(rect=(0, 0.07 * (1 + (len(models) - 1) // 4), 1, 1))
    return fig


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
