from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from helios.runner import build_dataset, list_windows, load_project, load_window_inputs, partition
from helios.runner.core.geometry import Projection, WindowSpec
from helios.runner.core.windows import Window
from helios.runner.predict.crops import crop_offsets, plan_window
from helios.runner.predict.inference import MARKER, run_inference
from helios.runner.predict.model import RunnerModel, token_validity
from helios.runner.predict.results import InferenceResultsConfig
from helios.runner.project.load import Project
from tests.runner.data.model import tiny_encoder, write_model_files
from tests.runner.data.project import make_project

QUIET: dict[str, Any] = {"progress": False, "device": "cpu"}


class BandModel(RunnerModel):
    """Predicts its first input (B02 of the first timestep, normalized) as one 'class'."""

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        mb, ids = batch
        band = mb.data["sentinel2_l2a"][:, :, :, 0, 0]
        return ids, band[:, None].float(), token_validity(mb, self.modalities)


class ConstantModel(RunnerModel):
    """Predicts class 1 everywhere."""

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        mb, ids = batch
        b, h, w = mb.data["sentinel2_l2a"].shape[:3]
        probs = torch.zeros(b, 3, h, w)
        probs[:, 1] = 1
        return ids, probs, token_validity(mb, self.modalities)


@pytest.fixture
def built(tmp_path: Path) -> tuple[Project, Path, str]:
    """A generated project (3 x 3 windows of 40 px), partitioned and built."""
    root = make_project(tmp_path / "project")
    write_model_files(root, tiny_encoder(tmp_path / "encoder.pt"), "segmentation", 3)
    project = load_project(root)
    scratch = tmp_path / "scratch"
    (pid,) = partition(project.requests, project.partitioner, project.window_preparer, scratch)
    build_dataset(project.dataset_config, scratch, [pid], progress=False)
    return project, scratch, pid


def _inputs(project: Project) -> dict[str, Any]:
    """The project's configs and model files, as run_inference takes them."""
    return {
        "dataset_config": project.dataset_config,
        "results_config": project.inference_results_config,
        "checkpoint": project.checkpoint_path,
        "model_yaml": project.model_config_path,
    }


def mtimes(windows: list[Window]) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for w in windows for p in w.outputs_dir.iterdir()}


def read(path: Path) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        return src.read(), src.profile | {"tags": src.tags(), "bounds": tuple(src.bounds)}


def test_crop_planning():
    assert crop_offsets(40, 16, 8) == [0, 8, 16, 24]
    assert crop_offsets(44, 16, 12) == [0, 12, 24, 28]
    assert crop_offsets(10, 16, 8) == [0]
    t = datetime(2024, 1, 1, tzinfo=timezone.utc)
    spec = WindowSpec(Projection("EPSG:32618", 10, -10), (0, 0, 30, 18), t, t)
    plan = plan_window(Window.from_spec(spec, "p", Path("w")), crop=16, overlap=4, patch=4)
    assert (plan.height, plan.width, plan.padded_height, plan.padded_width) == (18, 30, 20, 32)
    assert plan.offsets == [(0, 0), (0, 12), (0, 16), (4, 0), (4, 12), (4, 16)]
    assert all(r % 4 == 0 and c % 4 == 0 for r, c in plan.offsets)


def test_segmentation_outputs_per_window_and_rerun_skips(built):
    project, scratch, pid = built
    result = run_inference(scratch, pid, **_inputs(project), probabilities=True, **QUIET)
    windows = list_windows(scratch, pid)
    assert (result.predicted, result.already_done, result.not_built) == (9, 0, [])
    for w in windows:
        names = [p.name for p in w.output_paths()]
        assert names == ["output.tif", "output_probabilities.tif"]
        classes, prof = read(w.outputs_dir / "output.tif")
        assert classes.shape == (1, w.height, w.width) and prof["dtype"] == "uint8"
        assert set(np.unique(classes)) <= {0, 1, 2}
        assert json.loads(prof["tags"]["CLASS_NAMES"]) == {"1": "water", "2": "trees"}
        probs, prof = read(w.outputs_dir / "output_probabilities.tif")
        assert probs.shape == (3, w.height, w.width)
        np.testing.assert_allclose(probs.sum(0), 1, rtol=1e-5)
        assert (probs.argmax(0) == classes[0]).all()
    before = mtimes(windows)
    again = run_inference(scratch, pid, **_inputs(project), probabilities=True, **QUIET)
    assert (again.predicted, again.already_done) == (0, 9)
    assert mtimes(windows) == before
    # other settings (or another checkpoint) predict again
    other = run_inference(
        scratch, pid, **_inputs(project), probabilities=True, crop_size=16, **QUIET
    )
    assert other.predicted == 9


def test_windows_not_built_are_skipped(built):
    project, scratch, pid = built
    first = list_windows(scratch, pid)[0]
    (first.path / "helios_build.json").unlink()  # as if killed while building it
    result = run_inference(scratch, pid, **_inputs(project), **QUIET)
    assert result.not_built == [first.name] and result.predicted == 8
    assert not first.output_paths()


def test_overlapping_crops_reproduce_an_input_band_without_seams(built):
    project, scratch, pid = built
    model = BandModel.load_for_inference(project.checkpoint_path)
    kwargs = {"crop_size": 16, "overlap": 8, "probabilities": True, "model": model, **QUIET}
    run_inference(scratch, pid, **_inputs(project), **kwargs)
    for w in list_windows(scratch, pid):
        inputs, _ = load_window_inputs(w, project.dataset_config)
        expected = model.normalizer("sentinel2_l2a", inputs["sentinel2_l2a"])[:, :, 0, 0]
        got, _ = read(w.outputs_dir / "output_probabilities.tif")
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-6)


def test_a_constant_model_gives_a_constant_map(built):
    project, scratch, pid = built
    model = ConstantModel.load_for_inference(project.checkpoint_path)
    run_inference(scratch, pid, **_inputs(project), crop_size=16, overlap=4, model=model, **QUIET)
    for w in list_windows(scratch, pid):
        classes, _ = read(w.outputs_dir / "output.tif")
        assert (classes == 1).all()


def test_classification_raster_and_vector(built, tmp_path):
    project, scratch, pid = built
    write_model_files(project.path, tmp_path / "encoder.pt", "classification", 3)
    run_inference(scratch, pid, **_inputs(project), crop_size=16, **QUIET)
    for w in list_windows(scratch, pid):
        classes, _ = read(w.outputs_dir / "output.tif")
        assert classes.shape == (1, w.height, w.width) and len(np.unique(classes)) == 1
    results = project.inference_results_config
    assert results is not None
    project.inference_results_config = InferenceResultsConfig(
        "VECTOR", results.classification_fields
    )
    run_inference(scratch, pid, **_inputs(project), **QUIET)
    w = list_windows(scratch, pid)[0]
    record = json.loads((w.outputs_dir / MARKER).read_text())
    assert record["outputs"] == ["output.geojson"]
    (feature,) = json.loads((w.outputs_dir / "output.geojson").read_text())["features"]
    props = feature["properties"]
    assert props["land_cover"] in (0, 1, 2) and 0 < props["probability"] <= 1
    lon0, lat0, lon1, lat1 = w.wgs84_bounds()
    ring = np.array(feature["geometry"]["coordinates"][0])
    np.testing.assert_allclose(ring[:, 0].min(), lon0, atol=1e-6)
    np.testing.assert_allclose(ring[:, 1].max(), lat1, atol=1e-6)


def test_embeddings_at_token_resolution(built, tmp_path):
    project, scratch, pid = built
    write_model_files(project.path, tmp_path / "encoder.pt", "embedding")
    run_inference(scratch, pid, **_inputs(project), crop_size=16, overlap=8, **QUIET)
    for w in list_windows(scratch, pid):
        emb, prof = read(w.outputs_dir / "output.tif")
        assert emb.shape == (16, w.height // 4, w.width // 4) and emb.dtype == np.float32
        assert np.isfinite(emb).all() and prof["transform"].a == 40.0
        np.testing.assert_allclose(prof["bounds"], w.bounds)
        assert prof["tags"]["HELIOS_KIND"] == "regression"


def test_modalities_the_model_cannot_read_are_an_error(built, tmp_path):
    project, scratch, pid = built
    enc = tiny_encoder(tmp_path / "landsat.pt", modalities=("landsat",))
    write_model_files(project.path, enc, "segmentation")
    with pytest.raises(ValueError, match="none of which the model reads"):
        run_inference(scratch, pid, **_inputs(project), **QUIET)


@pytest.mark.slow
def test_two_processes_share_the_windows(built):
    """devices=2 (DDP spawn, here on CPU): each rank predicts whole windows of its own."""
    project, scratch, pid = built
    result = run_inference(scratch, pid, **_inputs(project), devices=2, crop_size=16, **QUIET)
    assert result.predicted == 9
    assert all(w.output_paths() for w in list_windows(scratch, pid))
