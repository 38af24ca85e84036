"""Names taken from inputs never escape their folder (issue: hardening, security).

Layer, band, output, group, label and partition names become folder and file names: they are
checked once at load time against a strict pattern, and every write under a folder goes
through `contained`, which refuses a path outside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helios.cli import main
from helios.runner.core.fsutil import UnsafePathError, contained
from helios.runner.core.windows import UnsafeNameError, check_name
from tests.runner.data.project import default_dataset, default_run_config, make_project

HOSTILE = ("../../../../ESCAPE", "a/b", "..", ".", "", "x" * 300, "/etc/passwd")


@pytest.mark.parametrize("name", HOSTILE)
def test_check_name_refuses_path_parts(name):
    with pytest.raises(UnsafeNameError, match="cannot become a file name"):
        check_name(name, "layer")


def test_contained_refuses_paths_outside_the_root(tmp_path):
    assert contained(tmp_path, tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(UnsafePathError, match="outside"):
        contained(tmp_path / "scratch", tmp_path / "scratch" / ".." / "ESCAPE.tif")


def _escaped(root: Path) -> list[Path]:
    return sorted(p for p in root.parent.rglob("*ESCAPE*"))


@pytest.mark.parametrize("which", ["input", "output"])
def test_a_hostile_layer_name_is_a_problem_before_anything_runs(tmp_path, which, capsys):
    dataset = default_dataset()
    layer = "sentinel2" if which == "input" else "output"
    dataset["layers"]["../../../../ESCAPE"] = dataset["layers"].pop(layer)
    project = make_project(tmp_path / "p", dataset=dataset)
    assert main(["run", "validate", str(project)]) == 2
    assert "'../../../../ESCAPE' cannot become a file name" in capsys.readouterr().err
    args = ["run", "predict", str(project), "--scratch", str(tmp_path / "s"), "--no-progress"]
    assert main(args) != 0
    assert _escaped(tmp_path) == []


@pytest.mark.parametrize("key", ["group_name", "label_layer", "label_property"])
def test_hostile_window_prep_names_are_problems(tmp_path, key, capsys):
    config = default_run_config()
    config["window_prep"] = {
        "labeled_window_preparer": {"class_path": "PointToPixelWindowPreparer"},
        "data_splitter": {
            "class_path": "RandomDataSplitter",
            "init_args": {"train_prop": 0.5, "val_prop": 0.5, "test_prop": 0.0, "seed": 0},
        },
        "label_layer": "label",
        "label_property": "category",
        key: "../x",
    }
    project = make_project(tmp_path / "p", run_config=config)
    assert main(["run", "validate", str(project)]) == 2
    err = capsys.readouterr().err
    assert f"window_prep.{key}: '../x' becomes a file name" in err
    scratch = tmp_path / "s"
    args = ["run", "finetune", str(project), "--scratch", str(scratch), "--no-progress"]
    assert main([*args, "--steps", "prepare,build"]) != 0
    err = capsys.readouterr().err
    assert f"window_prep.{key}" in err and "no windows in partitions" not in err
    assert not (tmp_path / "x").exists()


def test_names_in_existing_partitions_are_checked_on_read(tmp_path):
    from helios.runner.core.windows import list_windows

    index = tmp_path / "partitions" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"partitions": ["../../x"]}))
    with pytest.raises(UnsafeNameError):
        list_windows(tmp_path, "../../x")
