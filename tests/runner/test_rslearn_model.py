"""rslearn fine-tunes in the prediction runner: the native adapter equals rslearn's forward.

The fixture (tests/fixtures/rslearn_olmoearth_nano) is a real rslearn checkpoint of the
`sample` project's model: OlmoEarth nano, patch 4, PoolingDecoder + ClassificationHead.
`tests/runner/golden/rslearn_sample_model.json` holds rslearn's own outputs on fixed inputs
(raw arrays, normalized-input checksums, probabilities), written by
`tests/peer/rslearn_model_golden.py` in rslearn's environment. The checks, from the inside out:

1. the adapter on the golden arrays directly (normalization bit for bit, probabilities and
   feature maps, legacy and real timestamps, bf16 autocast);
2. the golden arrays written as windows' layer GeoTIFFs (rslearn layout), read back through
   model.yaml's `inputs` by the runner's crop data module;
3. `helios run predict` on a copy of the sample project with local imagery (its Planetary
   Computer layers pointed at local scenes), whose class rasters are rslearn's argmax; the
   windows it built are then read back and give rslearn's probabilities;
4. every real upstream model.yaml: supported ones build, the others name their class.

The end of the file checks OlmoEarth weights as the encoder of a Helios `RunnerModel`
(`encoder_format: olmoearth`): self-describing weights_only checkpoints, and
`helios run finetune` starting from them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import yaml
from affine import Affine
from shapely.geometry import box

from helios.cli import main
from helios.runner import list_partitions, list_windows
from helios.runner.core.geometry import Projection
from helios.runner.core.windows import COMPLETED, Window, window_dir
from helios.runner.materialize.dataset_config import DatasetConfig, load_dataset_config
from helios.runner.materialize.sources.base import Item
from helios.runner.predict.crops import plan_window
from helios.runner.predict.inference import load_model
from helios.runner.predict.rslearn_model import (
    RasterInput,
    RslearnCropDataModule,
    RslearnModel,
    UnsupportedRslearnConfig,
    is_rslearn_model_yaml,
    read_config,
)
from helios.runner.predict.rslearn_model.data import normalize
from helios.runner.predict.rslearn_model.modules import FeatureMaps, build_module

TESTS = Path(__file__).resolve().parents[1]
FIXTURE = TESTS / "fixtures" / "rslearn_olmoearth_nano"
GOLDEN = json.loads((TESTS / "runner" / "golden" / "rslearn_sample_model.json").read_text())
PROJECTS = [TESTS / "fixtures" / "upstream_projects", TESTS.parents[1] / "shared/upstream/projects"]
BANDS = GOLDEN["model"]["bands"]
MONTHS = {"single_timestep_32px": [8], "three_timesteps_16px": [6, 7, 8]}


def projects() -> Path:
    """The upstream project folders (in the repository, else beside it), or skip."""
    for root in PROJECTS:
        if (root / "sample" / "model.yaml").is_file():
            return root
    pytest.skip(f"upstream projects not found in {[str(p) for p in PROJECTS]}")


def unpack(obj: dict[str, Any]) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(obj["data"]))
    return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])


def windows_of(case: dict[str, Any]) -> list[tuple[np.ndarray, list[tuple[datetime, datetime]]]]:
    """(raw uint16 [C, T, H, W], time ranges) of each golden window."""
    out = []
    for w in case["inputs"]["sentinel2_l2a"]:
        ranges = [
            (datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in w["time_ranges"]
        ]
        out.append((unpack(w["image"]), ranges))
    return out


def model_yaml(tmp_path: Path, months: list[int]) -> Path:
    """The sample's model.yaml, reading `sentinel2_l2a_mo<m>` for each month (all of them)."""
    text = (projects() / "sample" / "model.yaml").read_text()
    layers = ", ".join(f'"sentinel2_l2a_mo{m:02d}"' for m in months)
    text = text.replace('layers: ["sentinel2_l2a_mo08"]', f"layers: [{layers}]")
    if len(months) > 1:
        text = text.replace(
            "        passthrough: true\n",
            "        passthrough: true\n        load_all_layers: true\n",
            1,
        )
    path = tmp_path / f"model_{'_'.join(map(str, months))}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def sample_model(tmp_path_factory) -> RslearnModel:
    yml = model_yaml(tmp_path_factory.mktemp("yaml"), [8])
    return RslearnModel.load(yml, FIXTURE / "checkpoint.ckpt", {"PATCH_SIZE": "4"})


def run_golden(
    model: RslearnModel, case: dict[str, Any], legacy: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Probabilities, the pooled feature map and the normalized inputs' sha256 of a case."""
    model.model.encoder[0].legacy_timestamps = legacy
    inputs, shas = [], []
    assert model.config.normalize is not None
    for image, ranges in windows_of(case):
        x = normalize("sentinel2_l2a", image.astype(np.float32), model.config.normalize)
        shas.append(hashlib.sha256(np.ascontiguousarray(x, dtype="<f4").tobytes()).hexdigest())
        inputs.append({"sentinel2_l2a": RasterInput(torch.from_numpy(x), ranges)})
    seen: dict[str, torch.Tensor] = {}
    hook = model.model.encoder[0].register_forward_hook(
        lambda _m, _i, out: seen.update(f=out.maps[0])
    )
    try:
        with torch.no_grad():
            probs = model(inputs, tuple(image.shape[-2:]))
    finally:
        hook.remove()
        model.model.encoder[0].legacy_timestamps = True
    return probs, seen["f"], shas


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_the_adapter_equals_rslearn_on_the_golden_inputs(sample_model, case) -> None:
    probs, features, shas = run_golden(sample_model, case)
    assert shas == [n["sha256_float32"] for n in case["normalized"]]  # bit for bit
    want = case["outputs"]["float32"]
    diff = float(np.abs(probs.numpy() - np.array(want["probs"])).max())
    fdiff = float(np.abs(features.numpy() - unpack(want["feature_map"])).max())
    assert diff <= 1e-5 and fdiff <= 1e-5, (diff, fdiff)
    real, _, _ = run_golden(sample_model, case, legacy=False)
    rdiff = float(
        np.abs(real.numpy() - np.array(case["outputs"]["float32_real_timestamps"]["probs"])).max()
    )
    assert rdiff <= 1e-5, rdiff
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what model.yaml's default would run
        bf16, _, _ = run_golden(sample_model, case)
    bdiff = float(
        np.abs(bf16.float().numpy() - np.array(case["outputs"]["bfloat16_autocast"]["probs"])).max()
    )
    assert bdiff <= 1e-2, bdiff
    print(f"{case['name']}: probs {diff:.1e}, features {fdiff:.1e}, real dates {rdiff:.1e}")
    print(f"{case['name']}: bf16 autocast vs rslearn's bf16 {bdiff:.1e}")


def write_window(
    root: Path,
    name: str,
    months: dict[int, tuple[np.ndarray, tuple[datetime, datetime]]],
    config: DatasetConfig,
) -> Window:
    """A built window in rslearn's layout: one `sentinel2_l2a_mo<m>` layer per month."""
    size = next(iter(months.values()))[0].shape[-1]
    window = Window(
        name=name,
        group="golden",
        projection=Projection("EPSG:32636", 10.0, -10.0),
        pixel_bounds=(5000, -9000, 5000 + size, -9000 + size),
        time_range=(datetime.fromisoformat("2024-06-01T00:00:00+00:00"),) * 2,
        path=window_dir(root, "golden", name),
    )
    window.save()
    items = []
    for month, (image, time_range) in months.items():
        layer = config.layers[f"sentinel2_l2a_mo{month:02d}"]
        (bs,) = layer.band_sets
        path = window.layer_dir(layer.name) / bs.dirname / "geotiff.tif"
        path.parent.mkdir(parents=True)
        data = image[[BANDS.index(b) for b in bs.bands]]
        profile = {"driver": "GTiff", "width": size, "height": size, "count": len(bs.bands)}
        with rasterio.open(
            path, "w", dtype="uint16", crs=window.crs, transform=window.transform, **profile
        ) as dst:
            dst.write(data)
        (window.layer_dir(layer.name) / COMPLETED).touch()
        item = Item(f"scene{month}", time_range, box(30, 0, 31, 1), [])
        items.append(
            {
                "layer_name": layer.name,
                "serialized_item_groups": [[item.to_json()]],
                "group_time_ranges": [[t.isoformat() for t in time_range]],
            }
        )
    (window.path / "items.json").write_text(json.dumps(items))
    return window


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_windows_read_through_model_yaml_inputs(tmp_path, case) -> None:
    config, problems = load_dataset_config(projects() / "sample" / "dataset.json")
    assert config is not None, problems
    months = MONTHS.get(case["name"], [6, 7, 8])
    model = RslearnModel.load(
        model_yaml(tmp_path, months), FIXTURE / "checkpoint.ckpt", {"PATCH_SIZE": "4"}
    )
    windows = []
    for i, (image, ranges) in enumerate(windows_of(case)):
        steps = months[-image.shape[1] :]  # the ragged window lacks the first month
        layers = {m: (image[:, t], ranges[t]) for t, m in enumerate(steps)}
        windows.append(write_window(tmp_path / "dataset", f"w{i}", layers, config))
    size = windows[0].width
    plans = [plan_window(w, size, 0, 4) for w in windows]
    dm = RslearnCropDataModule(plans, config, model.config, size, batch_size=2)
    (inputs, ids, inside) = next(iter(dm.predict_dataloader()))
    assert inside.all() and ids.tolist() == [0, 1]
    for x, n in zip(inputs, case["normalized"]):
        raw = np.ascontiguousarray(x["sentinel2_l2a"].image.numpy(), dtype="<f4").tobytes()
        assert hashlib.sha256(raw).hexdigest() == n["sha256_float32"]
    for legacy, key in ((True, "float32"), (False, "float32_real_timestamps")):
        model.model.encoder[0].legacy_timestamps = legacy
        with torch.no_grad():
            _, probs, valid = model.predict_step((inputs, ids, inside), 0)
        diff = float(np.abs(probs.numpy() - np.array(case["outputs"][key]["probs"])).max())
        assert diff <= 1e-5, (key, diff)
        assert valid.shape == (2, size // 4, size // 4) and valid.all()


def local_sample_project(tmp_path: Path) -> Path:
    """A copy of the sample project whose Sentinel-2 layers read local scenes (no network)."""
    root = tmp_path / "sample"
    shutil.copytree(projects() / "sample", root)
    shutil.copyfile(FIXTURE / "checkpoint.ckpt", root / "checkpoint.ckpt")
    dataset = json.loads((root / "dataset.json").read_text())
    for layer in dataset["layers"].values():
        source = layer.get("data_source")
        if source:
            layer["data_source"] = {
                "name": "rslearn.data_sources.local_files.LocalFiles",
                "src_dir": "imagery",
                "time_offset": source["time_offset"],
                "duration": source["duration"],
                "ingest": False,
            }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=1))
    (root / "imagery").mkdir()  # scenes go here once the windows are known
    return root


def write_scenes(
    root: Path, grids: list[tuple[str, str, Affine, int, datetime]], images: list[np.ndarray]
) -> None:
    """Per grid (name, CRS, transform, side, start time) and month, one 12-band scene.

    Month 8 tiles the golden image from the grid's top-left corner; every other month is its
    mirror, so reading the wrong month shows.
    """
    dataset = json.loads((root / "dataset.json").read_text())
    for (name, crs, transform, side, start), image in zip(grids, images):
        reps = (1, -(-side // image.shape[1]), -(-side // image.shape[2]))
        tiled = np.tile(image, reps)[:, :side, :side]
        for layer_name, layer in dataset["layers"].items():
            if "data_source" not in layer:
                continue
            offset = int(layer["data_source"]["time_offset"].removesuffix("d"))
            when = start + timedelta(days=offset + 10)
            bands = layer["band_sets"][0]["bands"]
            pixels = tiled if layer_name.endswith("_mo08") else tiled[:, ::-1]
            path = root / "imagery" / f"{name}_{layer_name}.tif"
            profile = {"driver": "GTiff", "count": len(bands), "dtype": "uint16", "crs": crs}
            with rasterio.open(
                path, "w", width=side, height=side, transform=transform, **profile
            ) as dst:
                dst.write(pixels[[BANDS.index(b) for b in bands]])
                for i, b in enumerate(bands):
                    dst.set_band_description(i + 1, b)
            path.with_suffix(".json").write_text(json.dumps({"datetime": when.isoformat()}))


def request_grids(project: Path) -> list[tuple[str, str, Affine, int, datetime]]:
    """A 3 km UTM box around each prediction request (enough for validation and partition)."""
    from pyproj import Transformer
    from shapely.geometry import shape

    requests = json.loads((project / "prediction_request_geometry.geojson").read_text())
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32718", always_xy=True)
    grids = []
    for i, feature in enumerate(requests["features"]):
        x, y = to_utm.transform(*shape(feature["geometry"]).centroid.coords[0])
        start = datetime.fromisoformat(feature["properties"]["oe_start_time"])
        grids.append(
            (f"request{i}", "EPSG:32718", Affine(10, 0, x - 1500, 0, -10, y + 1500), 300, start)
        )
    return grids


def test_helios_run_predict_on_the_sample_project(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATCH_SIZE", "4")  # the sample's model.yaml leaves it a template
    project, scratch = local_sample_project(tmp_path), tmp_path / "scratch"
    case = GOLDEN["cases"][0]  # 32 x 32 px, one August mosaic
    images = [image[:, 0] for image, _ in windows_of(case)]
    write_scenes(project, request_grids(project), images)  # to partition at all
    assert main(["run", "partition", str(project), "--scratch", str(scratch)]) == 0
    (pid,) = list_partitions(scratch)
    windows = list_windows(scratch, pid)
    for old in (project / "imagery").iterdir():
        old.unlink()
    grids = []
    for w in windows:  # now scenes on each window's own grid, the golden tiles on its crops
        assert w.time_range is not None
        grids.append((w.name, w.crs, w.transform, w.width, w.time_range[0]))
    order = {
        request_start: i for i, (_, _, _, _, request_start) in enumerate(request_grids(project))
    }
    write_scenes(project, grids, [images[order[g[4]]] for g in grids])
    args = ["run", "predict", str(project), "--scratch", str(scratch), "--device", "cpu"]
    assert main([*args, "--no-progress", "--crop-size", "32", "--overlap", "0"]) == 0
    assert "inference: 2 windows predicted" in capsys.readouterr().out
    want = np.array(case["outputs"]["float32"]["probs"])[[order[g[4]] for g in grids]]
    for window, probs in zip(windows, want):
        with rasterio.open(window.outputs_dir / "label.tif") as src:
            assert set(np.unique(src.read(1)).tolist()) == {int(probs.argmax())}
    # the windows Helios built, read back through model.yaml's inputs: rslearn's numbers
    config, _ = load_dataset_config(project / "dataset.json")
    assert config is not None
    model = load_model(project / "checkpoint.ckpt", project / "model.yaml")
    assert isinstance(model, RslearnModel)
    plans = [plan_window(w, 32, 0, 4) for w in windows]
    dm = RslearnCropDataModule(plans, config, model.config, 32, batch_size=16)
    worst = 0.0
    for inputs, ids, inside in dm.predict_dataloader():
        with torch.no_grad():
            got_ids, probs, _ = model.predict_step((inputs, ids, inside), 0)
        for item, p in zip(got_ids.tolist(), probs.numpy()):
            index = dm.dataset.items[item][0] if dm.dataset else 0
            worst = max(worst, float(np.abs(p - want[index]).max()))
    assert worst <= 1e-5, worst
    print(f"sample project end to end: max |probs - rslearn| = {worst:.1e}")


def upstream(name: str) -> Path:
    return projects() / name / "model.yaml"


SUPPORTED_PROJECTS = {
    # project: (patch size, feature width, kind, classes)
    "sample": (4, 128, "classification", 6),
    "awf": (1, 768, "segmentation", 10),
    "nandi_finetune": (1, 768, "segmentation", 11),
    "nandi_inference": (1, 768, "segmentation", 11),
    "burn-scar": (4, 768, "segmentation", 2),
    "landslide": (4, 768, "segmentation", 2),
}
UNSUPPORTED_PROJECTS = {
    "forest_loss_driver_esrun": "rslp.forest_loss_driver.train.ForestLossLightningModule",
    "geo": "rslp.helios.model.Helios",
    "lfmc_base_s1_s2": "rslp.olmoearth_pretrain.model.OlmoEarth",
    "lfmc_root_old": "rslp.helios.model.Helios",
    "solar_farm": "rslearn.models.simple_time_series.SimpleTimeSeries",
    "solar_farm_oe": "rslearn.train.transforms.concatenate.Concatenate",
}


@pytest.mark.parametrize("name", list(SUPPORTED_PROJECTS))
def test_supported_upstream_model_yamls_build(name) -> None:
    patch, width, kind, classes = SUPPORTED_PROJECTS[name]
    config = read_config(upstream(name), {"PATCH_SIZE": "4", "ENCODER_EMBEDDING_SIZE": "128"})
    assert config.encoder.patch_size == patch and config.task.kind == kind
    assert config.task.num_classes == classes and "sentinel2_l2a" in config.inputs
    decoder = [build_module(c, name) for c in config.decoder]
    crop = 16
    out: Any = FeatureMaps([torch.randn(2, width, crop // patch, crop // patch)])
    for module in decoder:
        out = module(out, (crop, crop))
    want = (2, classes) if kind == "classification" else (2, classes, crop, crop)
    assert tuple(out.shape) == want and torch.allclose(out.sum(1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("name", list(UNSUPPORTED_PROJECTS))
def test_unsupported_upstream_model_yamls_name_the_class(name) -> None:
    with pytest.raises(
        UnsupportedRslearnConfig, match=UNSUPPORTED_PROJECTS[name].replace(".", r"\.")
    ):
        read_config(upstream(name), {"PATCH_SIZE": "4"})


def test_templates_and_dialect(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PATCH_SIZE", raising=False)
    with pytest.raises(
        ValueError, match=r"unfilled template \{PATCH_SIZE\}.*PATCH_SIZE=4 helios run predict"
    ):
        RslearnModel.load(upstream("sample"), FIXTURE / "checkpoint.ckpt")
    monkeypatch.setenv("PATCH_SIZE", "4")
    model = RslearnModel.load(upstream("sample"), FIXTURE / "checkpoint.ckpt")
    assert model.patch_size == 4 and model.hparams["class_names"][0] == "Coffee"
    assert is_rslearn_model_yaml(upstream("sample"))
    helios_yaml = tmp_path / "model.yaml"
    helios_yaml.write_text(
        yaml.safe_dump({"model": {"class_path": "helios.runner.predict.model.RunnerModel"}})
    )
    assert not is_rslearn_model_yaml(helios_yaml)


def test_checkpoints_load_strictly(tmp_path) -> None:
    yml = model_yaml(tmp_path, [8])
    ckpt = torch.load(FIXTURE / "checkpoint.ckpt", weights_only=True)
    state = ckpt["state_dict"]
    state["model.decoders.crop_type_mapping.0.output.weight"] = state.pop(
        "model.decoders.crop_type_mapping.0.output_layer.weight"
    )
    torch.save(ckpt, tmp_path / "renamed.ckpt")
    with pytest.raises(ValueError) as err:
        RslearnModel.load(yml, tmp_path / "renamed.ckpt", {"PATCH_SIZE": "4"})
    assert "missing: ['model.decoders.crop_type_mapping.0.output_layer.weight']" in str(err.value)
    assert "unexpected: ['model.decoders.crop_type_mapping.0.output.weight']" in str(err.value)
    wide = tmp_path / "wide.yaml"
    wide.write_text(
        yml.read_text().replace("in_channels: {ENCODER_EMBEDDING_SIZE}", "in_channels: 192")
    )
    with pytest.raises(
        ValueError, match=r"output_layer.weight: checkpoint \(6, 128\) vs model \(6, 192\)"
    ):
        RslearnModel.load(wide, FIXTURE / "checkpoint.ckpt", {"PATCH_SIZE": "4"})
    torch.save({"state_dict": {"encoder.norm.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not an rslearn OlmoEarth fine-tune checkpoint"):
        RslearnModel.load(yml, tmp_path / "other.ckpt", {"PATCH_SIZE": "4"})


# -- OlmoEarth weights as the encoder of a Helios RunnerModel --------------------------------


def olmoearth_bundle(root: Path, version: str = "v1", seed: int = 0) -> Path:
    """An encoder-only OlmoEarth bundle (config.json + weights.pth) of random nano weights."""
    from helios.evals.baselines._olmoearth_load import random_encoder

    loaded = random_encoder("nano", version, seed)  # type: ignore[arg-type]
    root.mkdir(parents=True)
    (root / "config.json").write_text(
        json.dumps({"model": {"encoder_config": loaded.encoder_config}})
    )
    torch.save(
        {f"encoder.{k}": v for k, v in loaded.net.state_dict().items()}, root / "weights.pth"
    )
    return root


def s2_batch(size: int = 16) -> Any:
    from helios.data.sample import MaskedBatch

    gen = torch.Generator().manual_seed(0)
    return MaskedBatch(
        data={"sentinel2_l2a": torch.rand(2, size, size, 1, 12, generator=gen)},
        masks=[{"sentinel2_l2a": torch.zeros(2, size // 4, size // 4, 1, 3, dtype=torch.int8)}],
        timestamps=torch.tensor([[[15, 8, 2024]], [[15, 8, 2024]]]),
        latlon=torch.zeros(2, 2),
        patch_size=4,
    )


def test_olmoearth_weights_as_a_runner_encoder(tmp_path) -> None:
    from helios.evals.baselines.olmoearth import OlmoEarthEncoder
    from helios.runner.predict.model import RunnerModel, read_model_yaml

    bundle = olmoearth_bundle(tmp_path / "OlmoEarth-nano", "v1.2")
    weights = bundle / "weights.pth"
    model = RunnerModel(
        str(weights), "classification", 3, encoder_format="olmoearth", olmoearth_size="nano"
    )
    assert model.modalities == ["sentinel2_l2a", "sentinel1", "landsat"] and model.patch_size == 4
    ours, theirs = model.normalizer, OlmoEarthEncoder.random().normalizer
    assert np.array_equal(ours.bounds("sentinel2_l2a"), theirs.bounds("sentinel2_l2a"))
    assert model.eval()(s2_batch()).shape == (2, 3)
    with pytest.raises(ValueError, match="not tiny"):
        RunnerModel(str(bundle), encoder_format="olmoearth", olmoearth_size="tiny")
    ckpt = RunnerModel.save_untrained(tmp_path / "emb.ckpt", weights, encoder_format="olmoearth")
    payload = torch.load(ckpt, weights_only=True)  # self-describing, plain values only
    assert payload["helios_encoder"]["family"] == "olmoearth"
    again = RunnerModel.load_for_inference(ckpt)
    assert again.kind == "embedding" and again.modalities == model.modalities
    want = OlmoEarthEncoder.from_pretrained(bundle)(s2_batch()).pool(spatial=True)
    got = again(s2_batch()).permute(0, 2, 3, 1)
    assert torch.allclose(got, want, atol=1e-6)
    yml = tmp_path / "model.yaml"
    args = {
        "encoder_path": str(weights),
        "encoder_format": "olmoearth",
        "olmoearth_version": "v1.2",
    }
    yml.write_text(yaml.safe_dump({"model": {"init_args": args}}))
    assert read_model_yaml(yml) == args


def test_helios_run_finetune_starts_from_olmoearth_weights(tmp_path) -> None:
    from helios.runner.finetune_runner import FineTuneRunner
    from helios.runner.predict.model import RunnerModel
    from tests.runner.test_finetune import QUIET, finetune_project

    bundle = olmoearth_bundle(tmp_path / "OlmoEarth-nano")
    root = finetune_project(tmp_path / "project", bundle / "weights.pth")
    config = yaml.safe_load((root / "model.yaml").read_text())
    config["model"]["init_args"].update(encoder_format="olmoearth", olmoearth_size="nano")
    config["trainer"]["max_epochs"] = 1
    (root / "model.yaml").write_text(yaml.safe_dump(config))
    result = FineTuneRunner(root, tmp_path / "scratch").run(**QUIET)["train"]
    assert result.epochs == 1 and (root / "checkpoint.ckpt").exists()
    model = RunnerModel.load_for_inference(root / "checkpoint.ckpt")
    assert model.kind == "segmentation" and model.olmoearth is not None
    assert model.olmoearth["version"] == "v1" and model.modalities[0] == "sentinel2_l2a"
    start = torch.load(bundle / "weights.pth", weights_only=True)
    tuned = model.encoder.state_dict()
    assert any(not torch.equal(tuned[f"net.{k[8:]}"], v) for k, v in start.items())  # trained
