"""`helios fit | validate | test | predict` end to end on small data: configs, export, exact
resume of a preempted run, and two-process DDP on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helios.cli import main
from helios.data.synthetic import make_synthetic_dataset
from helios.nn.export import load_encoder
from tests.test_checkpoint import write_malicious_checkpoint
from tests.train.probe import tiny_run

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
MODS = ("sentinel2_l2a", "sentinel1", "srtm")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("syn"), 24, size=32, num_timesteps=3, modalities=MODS, seed=1
    )


def _tiny(tmp_path: Path, syn, **extra) -> Path:
    """A config delta: tiny model, synthetic data, CPU, a probe callback."""
    callbacks = ["tests.train.probe.LossRecorder", "tests.train.probe.KillAt"]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_run(syn.root, callbacks, **extra)))
    return path


def _fit(run_dir: Path, tiny: Path, *args: str) -> None:
    argv = [
        "fit",
        "--config",
        str(CONFIGS / "latent_mim.yaml"),
        "--config",
        str(tiny),
        "--trainer.default_root_dir",
        str(run_dir),
        *args,
    ]
    assert main(argv) == 0


def _losses(run_dir: Path) -> dict[int, float]:
    data = json.loads((run_dir / "probe_rank0.json").read_text())
    return {int(k): v for k, v in data["losses"].items()}


@pytest.mark.parametrize(
    "deltas",
    [
        ["model/nano.yaml"],
        ["model/tiny.yaml"],
        ["model/small.yaml"],
        ["model/base.yaml"],
        ["model/large.yaml"],
        ["trainer/gpu.yaml"],
        ["trainer/ddp.yaml"],
        ["trainer/fsdp.yaml"],
        ["trainer/cpu_ddp.yaml"],
        ["trainer/smoke.yaml"],
        ["data/pretraining.yaml", "model/base.yaml", "trainer/ddp.yaml"],
    ],
)
def test_every_shipped_config_parses(deltas, capsys):
    argv = ["fit", "--config", str(CONFIGS / "latent_mim.yaml")]
    for d in deltas:
        argv += ["--config", str(CONFIGS / d)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "helios.train.pretrain.LatentMIM"
    if "model/base.yaml" in deltas:
        assert printed["model"]["init_args"]["encoder"]["embed_dim"] == 768


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], "/persistent/run"),  # the launcher's folder beats the config file's
        (["--trainer.default_root_dir", "mine"], "mine"),  # a flag after the configs wins
    ],
)
def test_helios_run_dir_overrides_the_config_files(extra, expected, capsys, monkeypatch):
    """Beaker sets HELIOS_RUN_DIR; a shipped config's default_root_dir must not hide it."""
    monkeypatch.setenv("HELIOS_RUN_DIR", "/persistent/run")
    argv = ["fit", "--config", str(CONFIGS / "latent_mim.yaml"), *extra, "--print_config"]
    with pytest.raises(SystemExit):
        main(argv)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["default_root_dir"] == expected


def test_all_shipped_yaml_files_are_covered():
    shipped = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    covered = {
        "latent_mim.yaml",
        "model/nano.yaml",
        "model/tiny.yaml",
        "model/small.yaml",
        "model/base.yaml",
        "model/large.yaml",
        "trainer/gpu.yaml",
        "trainer/ddp.yaml",
        "trainer/fsdp.yaml",
        "trainer/cpu_ddp.yaml",
        "trainer/smoke.yaml",
        "data/pretraining.yaml",
    }
    sweeps = {s for s in shipped if s.startswith("sweeps/")}
    assert shipped - sweeps == covered, "a new config needs a parse test"
    from helios.sweep.grid import Sweep

    for s in sweeps:
        assert Sweep.load(CONFIGS / s).expand()


def test_fit_exports_and_the_other_commands_run(tmp_path, syn):
    run = tmp_path / "run"
    tiny = _tiny(tmp_path, syn)
    _fit(run, tiny, "--trainer.max_steps", "3", "--trainer.val_check_interval", "3")
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "config.yaml").exists()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["init_args"]["h5_dir"] == str(syn.root)  # the resolved config of the run
    exported = load_encoder(run / "encoder.pt")
    assert exported.encoder.embed_dim == 32 and set(exported.modalities) == set(MODS)
    assert exported.metadata["global_step"] == 3
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    base = [
        "--config",
        str(CONFIGS / "latent_mim.yaml"),
        "--config",
        str(tiny),
        "--trainer.default_root_dir",
        str(run),
    ]
    last = str(run / "checkpoints" / "last.ckpt")
    for command in ("validate", "test"):
        assert main([command, *base, "--ckpt_path", last]) == 0
    assert main(["predict", *base, "--ckpt_path", last]) == 0


def _subprocess_env(**extra: str) -> dict[str, str]:
    return dict(
        os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **extra
    )


def _fit_command(run_dir: Path, tiny: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "helios.cli",
        "fit",
        "--config",
        str(CONFIGS / "latent_mim.yaml"),
        "--config",
        str(tiny),
        "--trainer.default_root_dir",
        str(run_dir),
        *args,
    ]


def _killed_fit(run_dir: Path, tiny: Path, kill_at: int, *args: str) -> int:
    """Run fit in a subprocess killed hard once step `kill_at` is done; the last checkpoint."""
    proc = subprocess.run(
        _fit_command(run_dir, tiny, *args),
        env=_subprocess_env(HELIOS_TEST_KILL_AT=str(kill_at)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 137, proc.stderr[-2000:]
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


def _encoder_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "encoder.pt", weights_only=True)["state_dict"]


def _assert_same_run(straight: Path, resumed: Path) -> None:
    a, b = _losses(straight), _losses(resumed)
    for step in sorted(b):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    batches = json.loads((straight / "probe_rank0.json").read_text())["batches"]
    again = json.loads((resumed / "probe_rank0.json").read_text())["batches"]
    assert {k: batches[k] for k in again} == again  # the same samples and patch size per step
    ea, eb = _encoder_state(straight), _encoder_state(resumed)
    assert ea.keys() == eb.keys()
    for key in ea:
        assert torch.allclose(ea[key], eb[key], rtol=0, atol=1e-6), key


def test_killed_run_resumes_with_the_same_losses(tmp_path, syn):
    """A kill after a checkpoint that follows a validation resumes at the right batch."""
    tiny = _tiny(tmp_path, syn)
    args = ("--trainer.max_steps", "7", "--checkpoint_every", "1")
    args += ("--trainer.val_check_interval", "3")
    straight = tmp_path / "straight"
    _fit(straight, tiny, *args)
    resumed = tmp_path / "resumed"
    # Killed hard after step 5 (before that step's checkpoint: the last one is from step 4,
    # written after the validation at step 3).
    assert _killed_fit(resumed, tiny, 5, *args) == 4
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["PretrainDataModule"]["batches_consumed"] == 4  # validation batches don't count
    # The same command again, as a restarted job would run it: it finds last.ckpt by itself.
    _fit(resumed, tiny, *args)
    assert sorted(_losses(resumed)) == list(range(1, 8))  # 6-7 cross an epoch boundary
    _assert_same_run(straight, resumed)


@pytest.mark.slow
def test_kills_after_every_kind_of_checkpoint_resume_exactly(tmp_path, syn):
    """Kills after checkpoints before, at and after validations, chained in one run folder.

    Checkpoints every 2 steps, validation every 3: the step-2 checkpoint precedes any
    validation, step 4 and 8 follow one, step 6 and 12 coincide with one (the checkpoint is
    written just before that validation runs), and a kill at step 7 lands after a validation
    that the step-6 checkpoint does not know about.
    """
    tiny = _tiny(tmp_path, syn)
    args = ("--trainer.max_steps", "12", "--checkpoint_every", "2")
    args += ("--trainer.val_check_interval", "3")
    straight = tmp_path / "straight"
    _fit(straight, tiny, *args)
    resumed = tmp_path / "resumed"
    for kill_at, last in ((3, 2), (5, 4), (7, 6), (9, 8), (11, 10)):
        assert _killed_fit(resumed, tiny, kill_at, *args) == last
    _fit(resumed, tiny, *args)
    assert sorted(_losses(resumed)) == list(range(1, 13))
    _assert_same_run(straight, resumed)


def _refusal(path: Path) -> str:
    return (
        f"helios: error: {path}: not a safe checkpoint (it holds pickled code, refused; only "
        "tensors and plain values load)"
    )


def test_resuming_from_a_malicious_checkpoint_is_refused_without_running_it(tmp_path, syn):
    """`helios fit` finds last.ckpt by itself; torch's default is forced unsafe."""
    tiny = _tiny(tmp_path, syn)
    run = tmp_path / "run"
    marker = tmp_path / "payload-ran"
    last = write_malicious_checkpoint(run / "checkpoints" / "last.ckpt", marker)
    proc = subprocess.run(
        _fit_command(run, tiny, "--trainer.max_steps", "2"),
        env=_subprocess_env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert not marker.exists()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "error" in line] == [_refusal(last)]


@pytest.mark.parametrize("command", ["fit", "validate", "predict"])
def test_a_malicious_ckpt_path_is_refused_in_one_line(tmp_path, syn, command, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "payload-ran"
    evil = write_malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    argv = [
        command,
        "--config",
        str(CONFIGS / "latent_mim.yaml"),
        "--config",
        str(_tiny(tmp_path, syn)),
    ]
    argv += ["--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(evil)]
    assert main(argv) == 2
    assert not marker.exists()
    assert capsys.readouterr().err.strip().splitlines() == [_refusal(evil)]


def test_checkpoints_load_weights_only_explicitly(tmp_path, syn, monkeypatch):
    """Lightning's own resume is told `weights_only=True`, not left to torch's default."""
    import functools

    import lightning as L

    seen: list[object] = []
    fit = L.Trainer.fit

    @functools.wraps(fit)  # LightningCLI builds the fit options from this signature
    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", spy)
    run = tmp_path / "run"
    tiny = _tiny(tmp_path, syn)
    _fit(run, tiny, "--trainer.max_steps", "1")
    _fit(run, tiny, "--trainer.max_steps", "2")  # resumes from last.ckpt
    assert seen == [True, True]


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_and_ranks_agree(tmp_path, syn):
    tiny = _tiny(tmp_path, syn)
    run = tmp_path / "ddp"
    env = _subprocess_env()
    cmd = [
        sys.executable,
        "-m",
        "helios.cli",
        "fit",
        "--config",
        str(CONFIGS / "latent_mim.yaml"),
        "--config",
        str(tiny),
        "--config",
        str(CONFIGS / "trainer/cpu_ddp.yaml"),
        "--trainer.max_steps",
        "2",
        "--trainer.default_root_dir",
        str(run),
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((run / "probe_rank0.json").read_text())
    r1 = json.loads((run / "probe_rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert sorted(r0["losses"]) == ["1", "2"]
    assert r0["checksum"] == pytest.approx(r1["checksum"], rel=1e-6)


def test_parts_by_class_path_train_and_stay_plain_in_checkpoints(tmp_path, syn):
    """Objective, target and encoder parts named by import path in YAML (short names alias)."""
    run = tmp_path / "parts"
    tiny = _tiny(tmp_path, syn)
    parts = tmp_path / "parts.yaml"
    parts.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "init_args": {
                        "objective": "helios.train.pretrain.PatchDiscrimination",
                        "target": "helios.train.pretrain.EMATarget",
                        "encoder": {
                            "position": "helios.nn.encodings.RopePosition",
                            "norm_layer": "torch.nn.RMSNorm",
                        },
                    }
                }
            }
        )
    )
    _fit(run, tiny, "--config", str(parts), "--trainer.max_steps", "2")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    hparams = ckpt["hyper_parameters"]
    assert hparams["target"] == "helios.train.pretrain.EMATarget"
    assert hparams["encoder"]["norm_layer"] == "torch.nn.RMSNorm"
    assert any(k.startswith("target_encoder.") for k in ckpt["state_dict"])
    exported = load_encoder(run / "encoder.pt")
    assert isinstance(exported.encoder.norm, torch.nn.RMSNorm)
    assert exported.config.position == "helios.nn.encodings.RopePosition"


def test_short_names_and_class_paths_build_the_same_model():
    from helios.nn.export import EncoderConfig
    from helios.train.pretrain import LatentMIM, PixelReconstruction

    def build(**parts):
        torch.manual_seed(0)
        return LatentMIM(list(MODS), EncoderConfig(embed_dim=32, depth=1, num_heads=2), **parts)

    short = build(objective="mae", target="ema")
    full = build(objective="helios.train.pretrain.PixelReconstruction")
    assert isinstance(full.objective, PixelReconstruction) and full.target is None
    a, b = short.state_dict(), full.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith("target_") for k in a)  # mae builds no target
    with pytest.raises(ValueError, match="unknown Objective 'jepa'.*latent, mae"):
        build(objective="jepa")
    with pytest.raises(ValueError, match="not a helios.train.pretrain.Target subclass"):
        build(target="helios.train.pretrain.PixelReconstruction")
