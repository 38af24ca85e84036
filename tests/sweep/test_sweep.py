"""Sweep expansion: exact runs, configs and shell-safe commands; report selection."""

import json
import shlex
import subprocess
import sys

import pytest
import yaml

from helios.cli import main
from helios.sweep.grid import Sweep, SweepError, write_run_configs
from helios.sweep.report import best_rows, write_report
from tests.launch.conftest import launch_env, repo  # noqa: F401  (fixtures)

GRID = """
name: t
output: {out}
models:
  - {{kind: helios, path: "runs/my run/encoder.pt", name: "mine; rm -rf /"}}
tasks:
  - {{name: demo-cloud-tiles, root: demo_data, protocols: [knn, linear_probe]}}
grid:
  lr: [0.001, 0.01]
  pooling: [mean, max]
defaults: {{lr: 0.01, pooling: mean}}
settings: {{epochs: 3}}
"""


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text(GRID.format(out=tmp_path / "out dir"))
    return path


def test_expansion_counts_and_ids_are_stable(sweep_file):
    sweep = Sweep.load(sweep_file)
    runs = sweep.expand()
    # knn ignores lr: 2 poolings; linear probe: 2 lr x 2 poolings
    assert len(runs) == 2 + 4
    assert sorted(r.config.protocol for r in runs).count("knn") == 2
    assert [r.run_id for r in runs] == [r.run_id for r in Sweep.load(sweep_file).expand()]
    assert len({r.run_id for r in runs}) == len(runs)
    knn = [r for r in runs if r.config.protocol == "knn"]
    assert all("lr=" not in r.run_id for r in knn)
    defaults = sweep.expand(defaults_only=True)
    assert [(r.config.protocol, r.config.lr, r.config.pooling) for r in defaults] == [
        ("knn", 0.001, "mean"),  # lr is ignored by knn, so the dataclass default stays
        ("linear_probe", 0.01, "mean"),
    ]
    assert all(r.config.epochs == 3 for r in runs if r.config.protocol != "knn")


def test_commands_are_exact_and_shell_safe(sweep_file, tmp_path):
    sweep = Sweep.load(sweep_file)
    runs = sweep.expand(defaults_only=True)
    commands = write_run_configs(runs, sweep)
    for run in runs:
        assert run.command == [
            "helios",
            "eval",
            "run",
            "--config",
            str(run.config_path),
            "--no-progress",
        ]
        assert shlex.split(run.shell) == run.command  # spaces in the path survive quoting
        cfg = yaml.safe_load(run.config_path.read_text())
        assert cfg["model"]["path"] == "runs/my run/encoder.pt"
        assert cfg["protocol"] == run.config.protocol
        assert cfg["output"] == str(run.config_path.parent)
    text = commands.read_text()
    assert "rm -rf" not in text  # names go into ids as slugs, never raw into commands
    assert text.count("helios eval run") == 2


def test_cli_dry_run_writes_nothing_but_configs(sweep_file, tmp_path, capsys):
    assert main(["sweep", str(sweep_file), "--dry-run", "--defaults-only"]) == 0
    out = capsys.readouterr().out
    assert out.count("# todo") == 2
    assert not list((tmp_path / "out dir").rglob("results.json"))


def test_bad_sweeps_are_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "models: [{kind: helios, path: x}]\ntasks: [{name: demo-cloud-tiles, protocols: [svm]}]\n"
    )
    with pytest.raises(SweepError, match="bad.yaml.*svm"):
        Sweep.load(bad)
    bad.write_text("models: [{kind: helios}]\ntasks: [{name: t}]\ngrid: {learning_rate: [1]}\n")
    with pytest.raises(SweepError, match="learning_rate"):
        Sweep.load(bad)


def _result(path, model, protocol, val, test, lr):
    path.mkdir(parents=True)
    payload = {
        "model": model,
        "task": "t",
        "primary_metric": "accuracy",
        "val": {"accuracy": val},
        "test": {"accuracy": test},
        "config": {"protocol": protocol, "lr": lr, "normalization": "model", "pooling": "mean"},
    }
    (path / "results.json").write_text(json.dumps(payload))


def test_report_picks_best_validation_and_reports_its_test(tmp_path):
    _result(tmp_path / "runs/a", "m1", "linear_probe", 0.7, 0.9, 0.1)
    _result(tmp_path / "runs/b", "m1", "linear_probe", 0.8, 0.6, 0.01)
    _result(tmp_path / "runs/c", "m2", "linear_probe", 0.5, 0.5, 0.01)
    paths = write_report(tmp_path)
    rows = best_rows(
        [
            json.loads(p.read_text()) | {"_path": str(p.parent)}
            for p in tmp_path.rglob("results.json")
        ]
    )
    m1 = next(r for r in rows if r["model"] == "m1")
    assert (m1["val"], m1["test"], m1["lr"], m1["runs"]) == (0.8, 0.6, 0.01, 2)
    assert paths["chart"].stat().st_size > 1000
    assert "| m1 | t | linear_probe | accuracy | 0.8 | 0.6 |" in paths["markdown"].read_text()
    assert paths["csv"].read_text().startswith("model,task,protocol")


def test_optional_models_without_weights_are_skipped(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "models:\n"
        f"  - {{kind: galileo, path: {tmp_path / 'absent'}, name: g, optional: true}}\n"
        f"  - {{kind: helios, path: {tmp_path / 'enc.pt'}, name: h}}\n"
        "tasks: [{name: demo-cloud-tiles, protocols: [knn]}]\n"
    )
    sweep = Sweep.load(path)
    assert [m.name for m in sweep.models] == ["h"]
    assert sweep.skipped_models and "g" in sweep.skipped_models[0]


def test_beaker_dry_run_goes_through_the_launcher_api(
    sweep_file,
    repo,  # noqa: F811
    launch_env,  # noqa: F811
    monkeypatch,
    capsys,
):
    monkeypatch.chdir(repo)
    flags = "--cluster ai2/jupiter --user ann --gpus 0"
    argv = ["sweep", str(sweep_file), "--defaults-only", "--beaker", "--beaker-args", flags]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# Beaker experiment 'sweep-t'" in out
    assert out.count("# task ") == 2 and "helios eval run --config" in out
    job = next(line for line in out.splitlines() if line.startswith("#   helios eval run"))
    inline = shlex.split(job[1:])[4]
    assert json.loads(inline)["model"]["path"] == "runs/my run/encoder.pt"


def test_sweep_does_not_import_the_helios_cli():
    code = "import sys, helios.sweep.cli, helios.sweep.grid; print('helios.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_chart_has_one_labelled_panel_per_metric(tmp_path):
    import matplotlib.pyplot as plt

    from helios.sweep.report import chart

    rows = [
        {"model": m, "task": t, "protocol": "linear_probe", "metric": metric, "test": score}
        for m, score in (("a", 0.5), ("b", 0.75))
        for t, metric in (("seg", "miou"), ("tiles", "accuracy"))
    ]
    fig = chart(rows)
    labels = sorted(ax.get_ylabel() for ax in fig.axes)
    assert labels == [
        "test accuracy (fraction correct)",
        "test mIoU (mean intersection over union)",
    ]
    values = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"0.500", "0.750"} <= values  # every bar carries its score
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]
    plt.close(fig)


def test_report_command_names_the_files_it_rewrites(tmp_path, capsys):
    _result(tmp_path / "runs/a", "m1", "knn", 0.7, 0.9, 0.1)
    assert main(["sweep", "report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("results.csv", "results.md", "results.png"):
        assert f"wrote {tmp_path / name}" in out
    assert "rewritten from its results.json files" in out


def test_left_out_and_missing_weights_are_said(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(
        f"output: {tmp_path / 'out'}\n"
        "models:\n"
        "  - {kind: galileo, path: absent/galileo_nano, name: g, optional: true}\n"
        "  - {kind: helios, path: runs/enc.pt, name: h}\n"
        "tasks: [{name: demo-cloud-tiles, protocols: [knn]}]\n"
    )
    assert main(["sweep", str(path), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "# left out g (absent/galileo_nano not found)" in captured.out
    assert "optional: true" in captured.out
    assert "h: runs/enc.pt does not exist yet" in captured.err


def test_demo_sweep_expands_every_model_with_the_repository_weights(monkeypatch):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    sweep = Sweep.load(root / "configs/sweeps/demo.yaml")
    names = [m.name for m in sweep.models]
    assert {"helios-demo", "helios-random-init", "galileo-nano"} <= set(names)
    assert not any("galileo" in s for s in sweep.skipped_models)
    assert len(sweep.expand(defaults_only=True)) == 3 * len(names)  # 2 tile protocols + seg
    assert (root / "tests/fixtures/galileo_nano/encoder.pt").is_file()
