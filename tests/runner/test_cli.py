"""The runner end to end through `helios run ...`, with a stand-in for inference."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from helios.cli import main
from helios.runner import list_partitions, list_windows, load_project, load_window_inputs
from helios.runner.materialize import is_built
from helios.runner.predict.outputs import write_window_output
from tests.runner.data.project import (
    BANDS,
    default_dataset,
    default_run_config,
    make_project,
    request,
    scene_pixels,
    write_geotiff,
)


def fake_inference(project: Path, scratch: Path) -> int:
    """What the lead's inference step does: read inputs, write one output per window."""
    p = load_project(project, check_imagery=False)
    n = 0
    for pid in list_partitions(scratch):
        for w in list_windows(scratch, pid):
            if not is_built(w, p.dataset_config.fingerprint()) or w.output_paths():
                continue  # not built, or already predicted (inference resumes too)
            inputs, _ = load_window_inputs(w, p.dataset_config)
            s2 = inputs["sentinel2_l2a"]
            x = w.bounds[0] + (np.arange(w.width) + 0.5) * w.resolution
            value = np.broadcast_to(x / 1000.0, (w.height, w.width))
            classes = np.where(s2[:, :, 0, 0] > 1500, 2, 1)
            write_window_output(w, "value", value, kind="regression")
            write_window_output(
                w,
                "classes",
                classes,
                kind="classification",
                class_names=p.inference_results_config.class_names(),
                colormap=p.inference_results_config.colormap(),
            )
            n += 1
    return n


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_all(project: Path, scratch: Path, capsys) -> list[str]:
    args = [str(project), "--scratch", str(scratch)]
    assert main(["run", "validate", str(project)]) == 0
    assert main(["run", "partition", *args]) == 0
    assert main(["run", "build", *args, "--workers", "1", "--no-progress"]) == 0
    fake_inference(project, scratch)
    assert main(["run", "postprocess", *args]) == 0
    capsys.readouterr()
    assert main(["run", "combine", *args]) == 0
    return capsys.readouterr().out.split()


def test_pipeline_end_to_end_and_idempotent(project_dir, tmp_path, capsys):
    scratch = tmp_path / "scratch"
    results = run_all(project_dir, scratch, capsys)
    assert sorted(Path(r).name for r in results) == ["classes_epsg32618.tif", "value_epsg32618.tif"]
    with rasterio.open(scratch / "results" / "classes_epsg32618.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.colormap(1)[1] == (31, 120, 180, 255)
        assert set(np.unique(src.read(1))) <= {1, 2}
    with rasterio.open(scratch / "results" / "value_epsg32618.tif") as src:
        data = src.read(1)
        x = src.transform.c + (np.arange(src.width) + 0.5) * src.transform.a
        np.testing.assert_allclose(data, np.broadcast_to(x / 1000.0, data.shape), rtol=1e-6)
    manifest = json.loads((scratch / "results" / "manifest.json").read_text())
    assert len(manifest["results"]) == 2

    before = snapshot(scratch)
    again = run_all(project_dir, scratch, capsys)
    assert again == results
    assert snapshot(scratch) == before  # nothing rewritten, not even touched


def test_two_utm_zones(tmp_path, capsys):
    """A request across 78 W: windows in zones 17 and 18, one mosaic per zone."""
    project = tmp_path / "p"
    transform = Affine(0.0001, 0.0, -78.03, 0.0, -0.0001, 38.02)
    for b, band in enumerate(BANDS):
        data = scene_pixels(0, b, size=600)[:400]
        write_geotiff(
            project / "imagery" / "S2_20240110_ZONES" / f"{band}.tif",
            data,
            crs="EPSG:4326",
            transform=transform,
            nodata=0,
        )
    config = default_run_config(window_grid=64, overlap=8)
    config["partition_strategies"]["partition_request_geometry"] = {
        "class_path": "olmoearth_run.runner.tools.partitioners.grid_partitioner.GridPartitioner",
        "init_args": {"grid_size": 0.01},
    }
    ring = [
        [
            [-78.012, 37.995],
            [-77.988, 37.995],
            [-77.988, 38.005],
            [-78.012, 38.005],
            [-78.012, 37.995],
        ]
    ]
    make_project(
        project,
        run_config=config,
        dataset=default_dataset(period=None),
        requests=[request(ring)],
        imagery=False,
    )
    results = run_all(project, tmp_path / "scratch", capsys)
    names = sorted(Path(r).name for r in results)
    assert names == [
        "classes_epsg32617.tif",
        "classes_epsg32618.tif",
        "value_epsg32617.tif",
        "value_epsg32618.tif",
    ]
    for r in results:
        with rasterio.open(r) as src:
            assert src.crs.to_string() in ("EPSG:32617", "EPSG:32618")
            assert (src.read(1) != src.nodata).any()


def test_cli_reports_project_problems(tmp_path, capsys):
    project = make_project(tmp_path / "p", imagery=False)
    # imagery that is not there is missing for the build, not a config problem
    assert main(["run", "validate", str(project)]) == 0
    out = capsys.readouterr().out
    assert "imagery is not a directory (needed by: build)" in out
    assert main(["run", "validate", str(project), "--strict"]) == 1
    args = ["--scratch", str(tmp_path / "s")]
    assert main(["run", "partition", str(project), *args]) == 2
    assert "imagery is not a directory (needed by: build)" in capsys.readouterr().err
    assert main(["run", "validate", str(project), "--skip-imagery"]) == 0
    (project / "olmoearth_run.yaml").write_text("partition_strategies: [1, 2]\n")
    assert main(["run", "validate", str(project)]) == 2
    assert "problem(s) in project" in capsys.readouterr().err


def test_steps_need_a_partition_first(project_dir, tmp_path, capsys):
    assert main(["run", "build", str(project_dir), "--scratch", str(tmp_path / "s")]) == 2
    assert "run `helios run partition` first" in capsys.readouterr().err


def test_partition_takes_no_partition_ids(project_dir, tmp_path, capsys):
    """`partition` makes the partitions from every request: a filter it would ignore is refused."""
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "run",
                "partition",
                str(project_dir),
                "--scratch",
                str(tmp_path),
                "--partition-ids",
                "x",
            ]
        )
    assert exit_info.value.code == 2
    assert "--partition-ids" in capsys.readouterr().err
    assert not (tmp_path / "scratch").exists()
