"""The build step: materialize every window's input layers, in parallel, resumably.

Each window is materialized by `helios.runner.materialize.window.materialize_window` (search,
match, write rslearn layers); windows run in a process pool; failures are recorded in
build_report.json with their reason (which layer, which item, what the source said) and the
step fails only when the success rate falls below `min_success_rate`. The scratch's dataset
gets the project's dataset.json as its `config.json`, so rslearn opens it as a dataset.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from helios.runner.core.fsutil import write_json, write_text
from helios.runner.core.windows import (
    CONFIG_JSON,
    Window,
    dataset_root,
    list_windows,
    load_window,
    partition_dir,
)
from helios.runner.materialize.dataset_config import DatasetConfig
from helios.runner.materialize.window import WindowBuildError, is_built, materialize_window

logger = logging.getLogger(__name__)
BUILD_REPORT = "build_report.json"

__all__ = ["BUILD_REPORT", "BuildError", "BuildResult", "WindowBuildError", "build_dataset"]


class BuildError(RuntimeError):
    """Too many windows failed to build."""


_STATE: dict[str, Any] = {}


def _init_worker(config: DatasetConfig, dataset: Path) -> None:
    _STATE["config"], _STATE["dataset"] = config, dataset


def _build_one(path: str) -> tuple[str, str | None]:
    window = load_window(Path(path))
    try:
        materialize_window(window, _STATE["config"], _STATE["dataset"])
    except Exception as err:  # recorded per window; the step decides on the success rate
        logger.debug("window %s failed", window.name, exc_info=True)
        return path, f"{type(err).__name__}: {err}"
    return path, None


@dataclass
class BuildResult:
    """What `build_dataset` did."""

    total: int
    built: int
    already_built: int
    failed: dict[str, str] = field(default_factory=dict)
    """Window name -> reason."""
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        """Fraction of windows built (now or before)."""
        return (self.built + self.already_built) / self.total if self.total else 0.0

    def summary(self) -> str:
        """One line for the CLI."""
        line = (
            f"built {self.built} windows ({self.already_built} already built, "
            f"{len(self.failed)} failed of {self.total}) in {self.seconds:.1f} s"
        )
        if self.failed:
            first = next(iter(self.failed.items()))
            line += f"; e.g. {first[0]}: {first[1]}"
        return line


def build_dataset(
    config: DatasetConfig,
    scratch: Path,
    partition_ids: Sequence[str],
    workers: int = 1,
    min_success_rate: float = 0.9,
    progress: bool = True,
) -> BuildResult:
    """Materialize the input layers of every window of the given partitions.

    Raises:
        BuildError: when fewer than `min_success_rate` of the windows are built; the
            reasons are in `scratch/build_report.json` either way.

    """
    start = time.monotonic()
    scratch = Path(scratch)
    fingerprint = config.fingerprint()
    windows = [w for pid in partition_ids for w in list_windows(scratch, pid)]
    if not windows:
        raise BuildError(f"no windows in partitions {list(partition_ids)}: run partition first")
    todo = [w for w in windows if not is_built(w, fingerprint)]
    dataset = dataset_root(scratch)
    write_text(dataset / CONFIG_JSON, config.path.read_text())
    failures: dict[str, str] = {}
    paths = [str(w.path) for w in todo]
    bar = tqdm(total=len(paths), desc="build", unit="window", disable=not progress)
    if workers <= 1 or len(paths) <= 1:
        _init_worker(config, dataset)
        results: Any = (_build_one(p) for p in paths)
        for path, err in results:
            bar.update()
            if err:
                failures[Path(path).name] = err
    else:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(config, dataset))
        with pool as ex:
            for fut in as_completed([ex.submit(_build_one, p) for p in paths]):
                path, err = fut.result()
                bar.update()
                if err:
                    failures[Path(path).name] = err
    bar.close()
    result = BuildResult(
        total=len(windows),
        built=len(todo) - len(failures),
        already_built=len(windows) - len(todo),
        failed=dict(sorted(failures.items())),
        seconds=time.monotonic() - start,
    )
    _write_reports(scratch, partition_ids, windows, result)
    if result.success_rate < min_success_rate:
        raise BuildError(
            f"only {result.success_rate:.0%} of windows built (minimum {min_success_rate:.0%}); "
            f"{result.summary()}; see {scratch / BUILD_REPORT}"
        )
    return result


def _write_reports(
    scratch: Path, partition_ids: Sequence[str], windows: list[Window], result: BuildResult
) -> None:
    by_pid: dict[str, list[str]] = defaultdict(list)
    for w in windows:
        by_pid[w.partition_id].append(w.name)
    for pid in partition_ids:
        names = by_pid.get(pid, [])
        failed = {n: result.failed[n] for n in names if n in result.failed}
        write_json(
            partition_dir(scratch, pid) / BUILD_REPORT,
            {"windows": len(names), "built": len(names) - len(failed), "failed": failed},
        )
    write_json(
        scratch / BUILD_REPORT,
        {
            "partitions": list(partition_ids),
            "windows": result.total,
            "built": result.built + result.already_built,
            "success_rate": round(result.success_rate, 6),
            "failed": result.failed,
        },
    )
