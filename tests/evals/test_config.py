"""Eval configs: every extension point by `{class_path, init_args}`, short names as aliases.

The task, baseline and protocol of `tests/evals/custom.py` live outside the helios package and
are used through `helios eval run` and sweeps by their class paths alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from helios.cli import main
from helios.data.normalize import NormMethod
from helios.evals.cli import parse_eval_config
from helios.evals.components import ClassSpec, ComponentError
from helios.evals.models import ModelSpec, RandomInit, encoder_loader
from helios.evals.protocols import KNNProtocol
from helios.evals.run import EvalConfig, config_dict, resolve, run_eval
from helios.evals.tasks import TaskConfig, build_task, task_factory
from helios.nn.export import EncoderConfig
from helios.sweep.grid import Sweep, write_run_configs
from tests.evals.custom import Blobs, Majority, TinyBaseline

BLOBS = {"class_path": "tests.evals.custom.Blobs", "init_args": {"root": "none", "count": 8}}


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    encoder = EncoderConfig(embed_dim=16, depth=1, num_heads=2).build(["landsat"])
    path = tmp_path / "tiny.pt"
    torch.save(encoder.state_dict(), path)
    return path


def _yaml(path: Path, payload: dict) -> Path:
    path.write_text(yaml.safe_dump(payload))
    return path


def test_own_task_baseline_and_protocol_by_class_path(tmp_path, weights, capsys):
    model = {"class_path": "tests.evals.custom.TinyBaseline", "init_args": {"path": str(weights)}}
    for protocol in ("knn", "tests.evals.custom.Majority"):
        out = tmp_path / protocol
        config = {"model": model, "task": BLOBS, "protocol": protocol, "output": str(out)}
        argv = ["eval", "run", "--config", str(_yaml(tmp_path / "e.yaml", config))]
        assert main([*argv, "--no-progress", "--device", "cpu"]) == 0
        saved = json.loads((out / "results.json").read_text())
        assert saved["model"] == "TinyBaseline:tiny.pt" and saved["task"] == "blobs"
        assert saved["config"]["task"]["class_path"] == "tests.evals.custom.Blobs"
        assert saved["test"]["accuracy"] == (1.0 if protocol == "knn" else 0.5)
        assert saved["protocol"] == protocol.rpartition(".")[2]
    capsys.readouterr()


def test_short_forms_are_aliases_of_class_paths():
    assert TaskConfig("mados", "/d", {"tile_size": 80}).spec() == ClassSpec(
        "helios.evals.datasets.mados.MADOS", {"root": "/d", "tile_size": 80}
    )
    assert TaskConfig("m-eurosat", "/g").spec() == ClassSpec(
        "helios.evals.datasets.geobench.GeoBenchDataset", {"root": "/g", "name": "m-eurosat"}
    )
    assert ModelSpec("galileo", "/w").spec() == ClassSpec(
        "helios.evals.baselines.loaders.GalileoLoader", {"path": "/w"}
    )
    loader = encoder_loader(ModelSpec("helios-random", "e.pt", seed=3))
    assert isinstance(loader, RandomInit) and loader.seed == 3
    own = encoder_loader(ModelSpec("tests.evals.custom.TinyBaseline", "w", options={"width": 8}))
    assert isinstance(own, TinyBaseline) and own.width == 8
    parts = resolve(EvalConfig(task=ClassSpec(**BLOBS), protocol="tests.evals.custom.Majority"))
    assert isinstance(parts.protocol, Majority) and isinstance(parts.task(split="val"), Blobs)
    assert isinstance(resolve(EvalConfig()).protocol, KNNProtocol)
    assert isinstance(build_task("tests.evals.custom.Blobs", "r", "test"), Blobs)


def test_yaml_in_both_forms_parses_to_the_same_parts(tmp_path):
    short = {
        "model": {"kind": "helios-random", "path": "e.pt", "seed": 2},
        "task": {"name": "mados", "root": "/d", "options": {"tile_size": 80}},
        "protocol": "linear_probe",
        "norm_method": "norm_yes_clip_3_std",
    }
    model = {"path": "e.pt", "seed": 2}
    task = {"root": "/d", "tile_size": 80}
    full = {
        "model": {"class_path": "helios.evals.models.RandomInit", "init_args": model},
        "task": {"class_path": "helios.evals.datasets.mados.MADOS", "init_args": task},
        "protocol": {"class_path": "helios.evals.protocols.LinearProbeProtocol"},
        "norm_method": "norm_yes_clip_3_std",
    }
    a, _ = parse_eval_config(["--config", str(_yaml(tmp_path / "a.yaml", short))])
    b, _ = parse_eval_config(["--config", str(_yaml(tmp_path / "b.yaml", full))])
    assert isinstance(a.model, ModelSpec) and isinstance(b.model, ClassSpec)
    assert a.norm_method is b.norm_method is NormMethod.NORM_YES_CLIP_3_STD
    pa, pb = resolve(a), resolve(b)
    assert type(pa.loader) is type(pb.loader) is RandomInit and pa.loader.seed == pb.loader.seed
    assert type(pa.protocol) is type(pb.protocol)
    assert pa.task.keywords["tile_size"] == pb.task.keywords["tile_size"] == 80  # type: ignore[attr-defined]
    # a written config (class_path form included) reads back as the same recipe
    again, _ = parse_eval_config(["--config", str(_yaml(tmp_path / "c.yaml", config_dict(b)))])
    assert config_dict(again) == config_dict(b)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--task.name", "mados", "--task.options", '{"tile": 3}'], "task: .*MADOS: Option 'tile'"),
        (["--task", json.dumps({**BLOBS, "init_args": {"root": "r", "count": "x"}})], "count"),
        (["--model.kind", "prithvi"], "unknown model kind 'prithvi'; known: helios, "),
        (["--model.kind", "galileo", "--model.seed", "2"], "Option 'seed' is not accepted"),
        (["--protocol", "svm"], "unknown protocol 'svm'; known: knn, linear_probe, finetune"),
        (["--protocol", "tests.evals.custom.Blobs"], "EvalProtocol"),
        (["--norm_method", "clip"], "(?s)norm_method.*'norm_no_clip'.*Got value: clip"),
    ],
)
def test_bad_choices_fail_while_parsing(argv, match, capsys):
    with pytest.raises(SystemExit):
        parse_eval_config(argv)
    err = capsys.readouterr().err
    assert re.search(match, err), err


def test_python_built_configs_are_checked_before_loading():
    with pytest.raises(ComponentError, match="task: .*Option 'tile'"):
        task_factory(TaskConfig("mados", "/d", {"tile": 1}))
    with pytest.raises(ComponentError, match="unknown task 'nope'; known tasks: demo-cloud"):
        run_eval(EvalConfig(task=TaskConfig("nope")))


def test_sweeps_take_class_paths_too(tmp_path, weights):
    sweep_file = _yaml(
        tmp_path / "s.yaml",
        {
            "output": str(tmp_path / "out"),
            "models": [
                {
                    "class_path": "tests.evals.custom.TinyBaseline",
                    "init_args": {"path": str(weights)},
                },
                {"kind": "galileo", "path": str(tmp_path / "absent"), "optional": True},
            ],
            "tasks": [{**BLOBS, "protocols": ["knn", "tests.evals.custom.Majority"]}],
            "grid": {"pooling": ["mean", "max"], "lr": [0.1, 0.01]},
        },
    )
    sweep = Sweep.load(sweep_file)
    assert sweep.skipped_models and len(sweep.models) == 1
    runs = sweep.expand()
    # kNN ignores lr (2 poolings); Majority ignores lr and pooling (one run)
    assert len(runs) == 3 and sum("Majority" in r.run_id for r in runs) == 1
    write_run_configs(runs, sweep)
    for run in runs:
        parsed, _ = parse_eval_config(["--config", str(run.config_path)])
        written, read = config_dict(run.config), config_dict(parsed)
        for part in ("model", "task"):  # parsing adds the classes' defaults, keeps the rest
            assert read[part]["init_args"] == {
                **read[part]["init_args"],
                **written[part]["init_args"],
            }
        assert {k: v for k, v in read.items() if k not in ("model", "task")} == {
            k: v for k, v in written.items() if k not in ("model", "task")
        }
        assert json.loads(run.inline) == written
    sweep_file.write_text(sweep_file.read_text().replace("count: 8", "cnt: 8"))
    with pytest.raises(ValueError, match=r"s.yaml: tasks\[0\].*Option 'cnt'"):
        Sweep.load(sweep_file)
