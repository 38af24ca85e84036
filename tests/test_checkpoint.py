"""`helios.checkpoint`: tensors and plain values load; pickled code is refused, never run."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from helios.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    check_checkpoint,
    load_checkpoint,
)


class _Payload:
    """Unpickling this (with weights_only=False) writes `marker`: code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",))


def write_malicious_checkpoint(path: Path, marker: Path, **plain: object) -> Path:
    """A Lightning-looking checkpoint whose pickle runs code that writes `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": {"w": torch.zeros(2)}, "global_step": 3, **plain}
    torch.save({**payload, "callbacks": {"evil": _Payload(marker)}}, path)
    return path


@pytest.fixture(autouse=True)
def force_unsafe_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's default flipped to unsafe: only an explicit weights_only=True protects."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def test_tensors_and_plain_values_load(tmp_path: Path) -> None:
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3)}, "step": 7, "names": ["a", "b"]}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 7 and ckpt["names"] == ["a", "b"]
    assert torch.equal(ckpt["state_dict"]["w"], torch.arange(3))
    check_checkpoint(path)


@pytest.mark.parametrize("load", [load_checkpoint, check_checkpoint])
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, load: object) -> None:
    marker = tmp_path / "pwned"
    path = write_malicious_checkpoint(tmp_path / "last.ckpt", marker)
    with pytest.raises(UnsafeCheckpointError) as err:
        load(path)  # type: ignore[operator]
    assert not marker.exists()
    message = str(err.value)
    assert message == (
        f"{path}: not a safe checkpoint (it holds pickled code, refused; only tensors and "
        "plain values load)"
    )
    assert "\n" not in message


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_plain_pickle_of_code_is_refused(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "old.pt"
    with path.open("wb") as f:
        pickle.dump({"x": _Payload(marker)}, f, protocol=protocol)
    for load in (load_checkpoint, check_checkpoint):
        with pytest.raises(CheckpointError, match=f"^{path}: not a ") as err:
            load(path)
        assert "\n" not in str(err.value)
    assert not marker.exists()


def test_legacy_format_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    with path.open("wb") as f:
        torch.save({"w": torch.ones(2)}, f, _use_new_zipfile_serialization=False)
    check_checkpoint(path)
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(2))


def test_unreadable_files_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.zeros(1000)}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:2000])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), tensor)
    for path in (truncated, garbage, tmp_path / "missing.ckpt"):
        for load in (load_checkpoint, check_checkpoint):
            with pytest.raises(CheckpointError) as err:
                load(path)
            assert not isinstance(err.value, UnsafeCheckpointError)
            assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tensor)


def test_the_cli_refuses_a_malicious_encoder_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`helios eval run` with kind helios: one `helios: error:` line, the payload never ran."""
    from helios.cli import main

    marker = tmp_path / "pwned"
    evil = write_malicious_checkpoint(tmp_path / "encoder.pt", marker)
    argv = ["eval", "run", "--model.kind", "helios", "--model.path", str(evil)]
    argv += ["--task.name", "demo-cloud-tiles", "--task.root", str(tmp_path / "none")]
    assert main([*argv, "--protocol", "knn", "--no-progress"]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("helios: error: ")
    assert "not a safe checkpoint" in err[0] or "holds pickled code" in err[0]
