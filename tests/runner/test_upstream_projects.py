"""The real upstream project folders load unchanged (tests/fixtures/upstream_projects).

The 12 olmoearth_run / rslearn project folders are copied verbatim from
allenai/rslearn_projects (Apache-2.0; LICENSE and SOURCES.txt there). Each must load with
no problem at all: what they genuinely lack (checkpoints, imagery, annotation exports) is
reported as missing, with the step that needs it. More folders can be checked the same way by
pointing `HELIOS_UPSTREAM_PROJECTS` at a folder of project folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helios.cli import main
from helios.runner import load_project

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upstream_projects"
EXTRA = os.environ.get("HELIOS_UPSTREAM_PROJECTS")


def _folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


FOLDERS = _folders(FIXTURES) + (_folders(Path(EXTRA)) if EXTRA else [])


def test_all_twelve_folders_are_here():
    assert len(_folders(FIXTURES)) == 12


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_folder_loads_with_no_problem(folder, capsys):
    project = load_project(folder, strict=False)  # raises ProjectError on any problem
    assert project.dataset_config.layers
    for m in project.missing:
        assert m.steps, m  # every missing piece names the steps that need it
    assert main(["run", "validate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ")


def test_what_each_folder_lacks_is_reported_per_step():
    def missing(name: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for m in load_project(FIXTURES / name, strict=False).missing:
            for step in m.steps:
                out.setdefault(step, set()).add(m.what.split(":")[0])
        return out

    sample = missing("sample")
    assert "checkpoint.ckpt" in sample["inference"]
    awf = missing("awf")  # window-prep only: no partitioning, no requests
    requests = "prediction/*.geojson or prediction_request_geometry.geojson"
    assert {"olmoearth_run.yaml", requests} <= awf["partition"]
    geo = missing("geo")  # an Earth Engine layer and a project-specific source
    assert "dataset.json" in geo["build"]


def test_monthly_layers_form_one_series_and_aliases_name_modalities():
    sample = load_project(FIXTURES / "sample", strict=False)
    layers = sample.dataset_config.input_layers()
    assert [la.name for la in layers] == [f"sentinel2_l2a_mo{m:02d}" for m in range(1, 13)]
    assert {la.modality for la in layers} == {"sentinel2_l2a"}
    offsets = [la.data_source.time_offset.days for la in layers]  # type: ignore[union-attr]
    assert offsets == list(range(-180, 180, 30))
    nandi = load_project(FIXTURES / "nandi_inference", strict=False).dataset_config
    s1 = [la for la in nandi.input_layers() if la.modality == "sentinel1"]
    assert [la.name for la in s1] == ["sentinel1_ascending", "sentinel1_descending"]
    q = nandi.layers["sentinel2"].data_source.query  # type: ignore[union-attr]
    assert (q.space_mode, q.max_matches, q.period.days) == ("PER_PERIOD_MOSAIC", 12, 30)


def test_older_and_newer_run_configs_are_read():
    esrun = load_project(FIXTURES / "forest_loss_driver_esrun", strict=False)
    assert type(esrun.window_preparer).__name__ == "FixedWindowPartitioner"
    landslide = load_project(FIXTURES / "landslide", strict=False)  # a unified config
    assert type(landslide.partitioner).__name__ == "GridPartitioner"
    assert landslide.dataset_config.path.name == "config.json"
    results = landslide.inference_results_config
    assert results is not None and results.class_names() == {0: "no_landslide", 1: "landslide"}
    srtm = landslide.dataset_config.layers["srtm"]
    assert srtm.modality == "srtm" and srtm.bands == ("dem",)
