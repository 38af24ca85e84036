"""Protocols: kNN, linear probe and fine-tune, and whole eval runs on the real demo tasks."""

import json

import pytest
import torch

from helios.evals.api import TaskSpec
from helios.evals.protocols import knn_eval, knn_predict
from helios.evals.run import EvalConfig, ModelSpec, TaskConfig, run_eval

CLS = TaskSpec("t", "classification", 3, ("a", "b", "c"), ("landsat",))
ML = TaskSpec("m", "multilabel", 3, ("a", "b", "c"), ("landsat",))


def _clusters(n=60, d=16, seed=0):
    centers = torch.randn(3, d, generator=torch.Generator().manual_seed(42)) * 4
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return centers[y] + torch.randn(n, d, generator=g), y


def test_knn_recovers_clusters():
    x, y = _clusters()
    xt, yt = _clusters(seed=1)
    res = knn_eval(x, y, xt, yt, CLS, k=20)
    assert res["accuracy"] == pytest.approx(1.0)
    assert len(res["f1_per_class"]) == 3


def test_knn_uses_only_k_neighbours():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    scores = knn_predict(train, torch.tensor([0, 0, 1]), torch.tensor([[0.0, 1.0]]), CLS, k=1)
    assert scores.argmax(1).item() == 1


def test_knn_multilabel_averages_label_vectors():
    train = torch.tensor([[1.0, 0.0], [1.0, 0.01]])
    labels = torch.tensor([[1, 0, 1], [1, 1, 0]])
    scores = knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), ML, k=2)
    assert scores[0, 0] == pytest.approx(1.0) and 0.3 < scores[0, 1] < 0.7


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("task", "protocol"),
    [
        ("demo-cloud-tiles", "knn"),
        ("demo-cloud-tiles", "linear_probe"),
        ("demo-cloud-seg", "linear_probe"),
        ("demo-cloud-tiles", "finetune"),
    ],
)
def test_eval_runs_on_the_real_demo_tasks(demo_build, tiny_encoder_file, tmp_path, task, protocol):
    cfg = EvalConfig(
        model=ModelSpec("helios", str(tiny_encoder_file)),
        task=TaskConfig(task, str(demo_build.out)),
        protocol=protocol,
        epochs=2,
        batch_size=16,
        normalization="dataset",
        output=str(tmp_path / "run"),
        device="cpu",
    )
    result = run_eval(cfg, progress=False)
    metric = result["primary_metric"]
    assert 0.0 <= result["test"][metric] <= 1.0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["protocol"] == protocol and saved["task"] == task
    assert saved["train_samples"] > 0
    if task == "demo-cloud-seg":
        assert metric == "miou" and len(saved["test"]["iou_per_class"]) == 2


def test_random_init_baseline_is_seeded(tiny_encoder_file):
    from helios.evals.run import load_model

    def weights(seed):
        encoder, _, _ = load_model(ModelSpec("helios-random", str(tiny_encoder_file), seed=seed))
        return torch.cat([p.detach().flatten() for p in encoder.parameters()])

    trained = torch.cat(
        [
            p.detach().flatten()
            for p in load_model(ModelSpec("helios", str(tiny_encoder_file)))[0].parameters()
        ]
    )
    torch.manual_seed(123)
    a0 = weights(0)
    torch.manual_seed(456)  # the global seed does not matter, only the spec's
    assert torch.equal(a0, weights(0))
    assert not torch.equal(a0, weights(1))
    assert torch.equal(a0, trained)  # the fixture file holds the seed-0 initialisation
