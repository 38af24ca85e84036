"""Contract and semantics tests for every masking strategy in helios.data.masking."""

from __future__ import annotations

import argparse
import inspect
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from helios.data import masking
from helios.data.masking import (
    MaskingStrategy,
    ModalityCrossMasking,
    ModalityCrossRandomMasking,
    ModalityCrossSpaceMasking,
    ModalityCrossTimeMasking,
    RandomMasking,
    RandomTimeWithDecodeMasking,
    RatioMasking,
    SpaceMasking,
    SpaceTimeMasking,
    TimeMasking,
    split_counts,
    split_groups,
)
from helios.data.modalities import get_modality
from helios.data.sample import MaskValue

ENC, TGT, DEC, MIS = (int(v) for v in MaskValue)
STRATEGIES: dict[str, type[MaskingStrategy]] = {
    "random": RandomMasking,
    "space": SpaceMasking,
    "time": TimeMasking,
    "space_time": SpaceTimeMasking,
    "random_time_with_decode": RandomTimeWithDecodeMasking,
    "modality_cross_random": ModalityCrossRandomMasking,
    "modality_cross_space": ModalityCrossSpaceMasking,
    "modality_cross_time": ModalityCrossTimeMasking,
}
"""Every strategy built from ratios, under upstream's name (the test ids)."""
NAMES = sorted(STRATEGIES)


def build_masking(
    name: str,
    encode_ratio: float = 0.5,
    decode_ratio: float = 0.5,
    decode_only_modalities: Sequence[str] = (),
) -> MaskingStrategy:
    """The strategy upstream calls `name`, built from ratios as a config's init_args would."""
    cls: Any = STRATEGIES[name]
    return cls(
        encode_ratio=encode_ratio,
        decode_ratio=decode_ratio,
        decode_only_modalities=decode_only_modalities,
    )


RATIOS = [(0.5, 0.5), (0.25, 0.5), (0.6, 0.2)]


def expected_split(n: int, e: float, d: float) -> tuple[int, int]:
    """The documented rounding rule (floors, at least one each), written out independently."""
    if n == 0:
        return 0, 0
    if n == 1:
        return 1, 0
    n_enc = min(max(1, math.floor(n * e)), n - 1)
    return n_enc, min(max(1, math.floor(n * d)), n - n_enc)


def expected_tokens(n: int, e: float, d: float) -> tuple[int, int]:
    """A modality's token split: plain floors (one token: encoded)."""
    return (1, 0) if n == 1 else (math.floor(n * e), math.floor(n * d))


def make_tokens(seed: int, hole: bool = True) -> dict[str, np.ndarray]:
    """A random sample: S2 with missing steps and clouds, S1 missing at some steps, maps, era5."""
    rng = np.random.default_rng(seed)
    shapes = {
        "sentinel2_l2a": (4, 4, 6, 3),
        "sentinel1": (4, 4, 6, 1),
        "srtm": (4, 4, 1, 1),
        "worldcover": (4, 4, 1, 1),
        "era5": (1, 1, 6, 1),
    }
    tokens = {m: np.full(s, ENC, dtype=np.int8) for m, s in shapes.items()}
    tokens["sentinel2_l2a"][:, :, rng.choice(6, 2, replace=False)] = MIS
    tokens["sentinel2_l2a"][rng.random((4, 4, 6, 3)) < 0.1] = MIS
    tokens["sentinel1"][:, :, rng.choice(6, 3, replace=False)] = MIS
    tokens["srtm"][rng.random((4, 4, 1, 1)) < 0.2] = MIS
    tokens["era5"][0, 0, rng.integers(6)] = MIS
    if hole:  # a position with no data in any modality
        for m in ("sentinel2_l2a", "sentinel1", "srtm", "worldcover"):
            tokens[m][1, 2] = MIS
    return tokens


def count(arrays: list[np.ndarray], value: int) -> int:
    return sum(int((a == value).sum()) for a in arrays)


def unit_fates(values: np.ndarray) -> set[int]:
    return set(np.unique(values[values != MIS]).tolist())


def band_set_roles(out: dict[str, np.ndarray], names: list[str]) -> list[set[int]]:
    """The set of non-missing values in each (modality, band set)."""
    return [unit_fates(out[m][..., s]) for m in names for s in range(out[m].shape[3])]


# ---- structure checks, one per unit type ----------------------------------------------------


def check_tokens(tokens, out, e, d, names) -> bool:
    """Each modality of `names` split on its own by `expected_tokens`."""
    for m in names:
        n = int((tokens[m] != MIS).sum())
        if (count([out[m]], ENC), count([out[m]], DEC)) != expected_tokens(n, e, d):
            return False
    return True


def check_random(tokens, out, e, d, names) -> None:
    assert check_tokens(tokens, out, e, d, names)


def check_space(tokens, out, e, d, names) -> bool:
    spatial = [m for m in names if get_modality(m).is_spatial]
    fates = {}
    for i, j in np.ndindex(4, 4):
        values = set().union(*(unit_fates(out[m][i, j]) for m in spatial))
        if len(values) > 1:
            return False
        if values:
            fates[i, j] = values.pop()
    positions = list(fates.values())
    if (positions.count(ENC), positions.count(DEC)) != expected_split(len(positions), e, d):
        return False
    return check_tokens(tokens, out, e, d, [m for m in names if m not in spatial])


def check_time(tokens, out, e, d, names) -> bool:
    temporal = [m for m in names if get_modality(m).is_multitemporal]
    fates = []
    for t in range(6):
        values = set().union(*(unit_fates(out[m][:, :, t]) for m in temporal))
        if len(values) > 1:
            return False
        fates.extend(values)
    if (fates.count(ENC), fates.count(DEC)) != expected_split(len(fates), e, d):
        return False
    return check_tokens(tokens, out, e, d, [m for m in names if m not in temporal])


def check_no_shared_band_set(tokens, out, e, d, names) -> None:
    for roles in band_set_roles(out, list(out)):
        assert not {ENC, DEC} <= roles


def check_random_time_with_decode(tokens, out, e, d, names) -> None:
    roles = [r for r in band_set_roles(out, names) if r]
    check_no_shared_band_set(tokens, out, e, d, names)
    n_enc = min(max(1, math.ceil(len(roles) * e)), len(roles) - 1)  # the rest decode
    assert sum(ENC in r for r in roles) == n_enc
    assert sum(DEC in r for r in roles) == len(roles) - n_enc


CHECKS = {
    "random": check_random,
    "space": lambda *a: assert_true(check_space(*a)),
    "time": lambda *a: assert_true(check_time(*a)),
    "space_time": lambda *a: assert_true(check_space(*a) or check_time(*a)),
    "random_time_with_decode": check_random_time_with_decode,
    "modality_cross_random": check_no_shared_band_set,
    "modality_cross_space": check_no_shared_band_set,
    "modality_cross_time": check_no_shared_band_set,
}


def assert_true(ok: bool) -> None:
    assert ok


def test_every_strategy_has_a_check() -> None:
    assert set(CHECKS) == set(STRATEGIES)
    ratio_classes = {
        cls
        for _, cls in inspect.getmembers(masking, inspect.isclass)
        if cls.__module__ == masking.__name__
        and issubclass(cls, MaskingStrategy)
        and not inspect.isabstract(cls)
        and not cls.__name__.startswith("_")
        and "encode_ratio" in inspect.signature(cls).parameters
    }
    assert ratio_classes == set(STRATEGIES.values())  # a new strategy needs its checks


# ---- the contract, over every strategy ------------------------------------------------------


@pytest.mark.parametrize("decode_only", [(), ("worldcover",)])
@pytest.mark.parametrize("ratios", RATIOS)
@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, ratios: tuple[float, float], decode_only: tuple[str, ...]) -> None:
    e, d = ratios
    strategy = build_masking(name, e, d, decode_only)
    assert isinstance(strategy, STRATEGIES[name])
    names = [m for m in make_tokens(0) if m not in decode_only]
    for seed in range(6):
        tokens = make_tokens(seed, hole=seed % 2 == 0)
        before = {m: t.copy() for m, t in tokens.items()}
        out = strategy(tokens, np.random.default_rng(seed))
        assert set(out) == set(tokens)
        for m, t in tokens.items():
            np.testing.assert_array_equal(t, before[m])  # inputs untouched
            assert out[m].shape == t.shape and out[m].dtype == np.int8
            assert ((out[m] == MIS) == (t == MIS)).all()
            assert np.isin(out[m], [ENC, TGT, DEC, MIS]).all()
        for m in decode_only:
            assert not (out[m] == ENC).any()
            if not name.startswith("modality_cross"):  # cross: masked by the base, not encoded
                assert ((out[m] == DEC) == (tokens[m] != MIS)).all()
        assert count(list(out.values()), ENC) >= 1
        assert count(list(out.values()), DEC) >= 1
        CHECKS[name](tokens, out, e, d, names)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed_and_varies_across_seeds(name: str) -> None:
    strategy = build_masking(name)
    tokens = make_tokens(3)
    first = strategy(tokens, np.random.default_rng(7))
    again = strategy(tokens, np.random.default_rng(7))
    for m in tokens:
        np.testing.assert_array_equal(first[m], again[m])
    others = [strategy(tokens, np.random.default_rng(s)) for s in range(8, 13)]
    assert any(any((o[m] != first[m]).any() for m in tokens) for o in others)


@pytest.mark.parametrize("name", NAMES)
def test_edge_cases(name: str) -> None:
    strategy = build_masking(name)
    rng = np.random.default_rng(0)
    tokens = {m: np.full_like(t, MIS) for m, t in make_tokens(0).items()}
    out = strategy(tokens, rng)
    assert all((o == MIS).all() for o in out.values())

    tokens["sentinel1"][2, 3, 4, 0] = ENC  # a single available token is encoded
    out = strategy(tokens, rng)
    assert out["sentinel1"][2, 3, 4, 0] == ENC
    assert count(list(out.values()), MIS) == sum(t.size for t in tokens.values()) - 1

    tokens["srtm"][0, 0, 0, 0] = ENC  # two units: one each
    out = strategy(tokens, rng)
    assert sorted([out["sentinel1"][2, 3, 4, 0], out["srtm"][0, 0, 0, 0]]) == [ENC, DEC]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "ratios", [(0.0, 0.5), (0.5, 0.0), (1.2, 0.1), (0.5, -0.1), (0.6, 0.6), (float("nan"), 0.5)]
)
def test_invalid_ratios_raise(name: str, ratios: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="ratio"):
        build_masking(name, *ratios)


def test_invalid_options_raise() -> None:
    with pytest.raises(KeyError, match="known modalities"):
        RandomMasking(decode_only_modalities=["worldcoverr"])
    with pytest.raises(ValueError, match="time_probability"):
        SpaceTimeMasking(time_probability=1.5)
    with pytest.raises(ValueError, match="random_probability"):
        RandomTimeWithDecodeMasking(random_probability=-0.1)
    with pytest.raises(ValueError, match="min_encoded_band_sets"):
        ModalityCrossMasking(min_encoded_band_sets=0)
    with pytest.raises(ValueError, match="max_encoded_band_sets"):
        ModalityCrossMasking(min_encoded_band_sets=3, max_encoded_band_sets=2)
    with pytest.raises(ValueError, match=r"\[h, w, T, S\]"):
        RandomMasking()({"srtm": np.zeros((4, 4, 1), np.int8)}, np.random.default_rng(0))


@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_builds_from_a_class_path(name: str) -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--masking", type=MaskingStrategy)
    cls = STRATEGIES[name]
    spec = {
        "class_path": f"{cls.__module__}.{cls.__name__}",
        "init_args": {"encode_ratio": 0.3, "decode_ratio": 0.6, "decode_only_modalities": ["srtm"]},
    }
    strategy = parser.instantiate(parser.parse_object({"masking": spec})).masking
    assert type(strategy) is cls and strategy.decode_only_modalities == ("srtm",)
    ratios = strategy.base if isinstance(strategy, ModalityCrossMasking) else strategy
    assert isinstance(ratios, RatioMasking)
    assert (ratios.encode_ratio, ratios.decode_ratio) == (0.3, 0.6)
    with pytest.raises(argparse.ArgumentError, match="no attribute .spacetime."):
        parser.parse_object({"masking": {"class_path": "helios.data.masking.spacetime"}})


def test_modality_cross_presets_wrap_their_base() -> None:
    strategy = ModalityCrossTimeMasking(0.3, 0.6, ["worldcover"])
    assert isinstance(strategy, ModalityCrossMasking)
    assert isinstance(strategy.base, TimeMasking)
    assert strategy.decode_only_modalities == ("worldcover",)
    assert (strategy.base.encode_ratio, strategy.base.decode_ratio) == (0.3, 0.6)


def test_split_counts() -> None:
    assert split_counts(0, 0.5, 0.5) == (0, 0)
    assert split_counts(1, 0.5, 0.5) == (1, 0)
    assert split_counts(2, 0.9, 0.1) == (1, 1)
    assert split_counts(5, 0.5, 0.5) == (2, 2)  # floors, as the reference: one TARGET_ONLY
    assert split_counts(10, 0.25, 0.5) == (2, 5)
    assert split_counts(10, 0.1, 0.1) == (1, 1)
    assert split_counts(4, 0.1, 0.75) == (1, 3)  # at least one encoded (upstream: 0)
    assert split_groups(6, 0.3) == 2 and split_groups(2, 0.9) == 1 and split_groups(5, 0.5) == 3


# ---- strategy-specific semantics ------------------------------------------------------------


def test_space_and_time_fall_back_to_random() -> None:
    rng = np.random.default_rng(0)
    one_position = {"sentinel2_l2a": np.full((4, 4, 6, 3), MIS, np.int8)}
    one_position["sentinel2_l2a"][0, 0] = ENC
    out = SpaceMasking()(one_position, rng)["sentinel2_l2a"][0, 0]
    assert (out == ENC).sum() == 9 and (out == DEC).sum() == 9
    two_steps = {"sentinel1": np.full((4, 4, 6, 1), MIS, np.int8)}
    two_steps["sentinel1"][:, :, [2, 4]] = ENC  # fewer than 3 steps: random, as the reference
    out = TimeMasking()(two_steps, rng)["sentinel1"][:, :, [2, 4]]
    assert (out == ENC).sum() == 16 and (out == DEC).sum() == 16
    assert any(len(unit_fates(out[:, :, t])) > 1 for t in range(2))
    # space_time must not pick time for two steps: it does space, so positions share a fate
    out = SpaceTimeMasking(time_probability=1.0)(two_steps, rng)["sentinel1"][..., 0]
    assert all(len(unit_fates(out[i, j])) == 1 for i, j in np.ndindex(4, 4))


def test_space_time_picks_both() -> None:
    strategy = SpaceTimeMasking()
    names = list(make_tokens(0))
    picked = set()
    for seed in range(20):
        tokens = make_tokens(seed)
        out = strategy(tokens, np.random.default_rng(seed))
        picked.add(
            (check_space(tokens, out, 0.5, 0.5, names), check_time(tokens, out, 0.5, 0.5, names))
        )
    assert (True, False) in picked and (False, True) in picked


def test_mismatched_grids_raise() -> None:
    tokens = {
        "sentinel2_l2a": np.zeros((4, 4, 6, 3), np.int8),
        "srtm": np.zeros((2, 2, 1, 1), np.int8),
    }
    with pytest.raises(ValueError, match="one token grid"):
        SpaceMasking()(tokens, np.random.default_rng(0))
    tokens = {
        "sentinel2_l2a": np.zeros((4, 4, 6, 3), np.int8),
        "era5": np.zeros((1, 1, 5, 1), np.int8),
    }
    with pytest.raises(ValueError, match="one time axis"):
        TimeMasking()(tokens, np.random.default_rng(0))


def test_random_time_with_decode_time_mode() -> None:
    """With random_probability=0 and full data, encode and decode steps are disjoint."""
    tokens = {
        "sentinel2_l2a": np.zeros((4, 4, 6, 3), np.int8),
        "sentinel1": np.zeros((4, 4, 6, 1), np.int8),
        "worldcover": np.zeros((4, 4, 1, 1), np.int8),
    }
    strategy = RandomTimeWithDecodeMasking(
        random_probability=0.0, decode_only_modalities=["worldcover"]
    )
    for seed in range(10):
        out = strategy(tokens, np.random.default_rng(seed))
        enc_steps = {
            t for m in ("sentinel2_l2a", "sentinel1") for t in np.nonzero(out[m] == ENC)[2]
        }
        dec_steps = {
            t for m in ("sentinel2_l2a", "sentinel1") for t in np.nonzero(out[m] == DEC)[2]
        }
        assert enc_steps and dec_steps and not enc_steps & dec_steps
        assert (out["worldcover"] == DEC).all()


def test_random_time_with_decode_random_mode() -> None:
    """With random_probability=1, each band set gets floor(n * ratio) tokens of its role."""
    strategy = RandomTimeWithDecodeMasking(0.25, 0.5, random_probability=1.0)
    for seed in range(5):
        tokens = make_tokens(seed)
        out = strategy(tokens, np.random.default_rng(seed))
        for m in tokens:
            for s in range(tokens[m].shape[3]):
                n = int((tokens[m][..., s] != MIS).sum())
                n_enc, n_dec = (int((out[m][..., s] == v).sum()) for v in (ENC, DEC))
                if n_enc:
                    assert n_enc == min(n, max(1, math.floor(n * 0.25)))
                if n_dec:
                    assert n_dec == min(n, max(1, math.floor(n * 0.5)))


def test_modality_cross_options() -> None:
    tokens = make_tokens(1)
    rng = np.random.default_rng(0)
    one = ModalityCrossMasking(SpaceMasking(), min_encoded_band_sets=1, max_encoded_band_sets=1)
    for _ in range(10):
        roles = band_set_roles(one(tokens, rng), list(tokens))
        assert sum(ENC in r for r in roles) == 1
    same = ModalityCrossMasking(TimeMasking(), allow_same_band_set=True)
    shared = 0
    for _ in range(20):
        out = same(tokens, rng)
        assert count(list(out.values()), ENC) >= 1 and count(list(out.values()), DEC) >= 1
        shared += sum({ENC, DEC} <= r for r in band_set_roles(out, list(tokens)))
    assert shared > 0
    # one band set: encoded, never decoded, so the sample is masked token-wise at random
    single = {"sentinel1": make_tokens(2)["sentinel1"]}
    out = ModalityCrossMasking()(single, np.random.default_rng(5))["sentinel1"]
    n = int((single["sentinel1"] != MIS).sum())
    assert ((out == ENC).sum(), (out == DEC).sum()) == expected_tokens(n, 0.5, 0.5)
    # decode-only modalities are masked by the base and never encoded
    cross = ModalityCrossRandomMasking(decode_only_modalities=["worldcover"])
    for seed in range(5):
        out = cross(make_tokens(seed), np.random.default_rng(seed))
        assert not (out["worldcover"] == ENC).any() and (out["worldcover"] == DEC).any()


def test_resolvable_by_jsonargparse() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--masking", type=MaskingStrategy)
    cfg = parser.parse_object(
        {
            "masking": {
                "class_path": "helios.data.masking.ModalityCrossMasking",
                "init_args": {
                    "base": {
                        "class_path": "helios.data.masking.SpaceMasking",
                        "init_args": {"encode_ratio": 0.25, "decode_only_modalities": ["srtm"]},
                    },
                    "max_encoded_band_sets": 2,
                },
            }
        }
    )
    strategy = parser.instantiate(cfg).masking
    assert isinstance(strategy, ModalityCrossMasking) and isinstance(strategy.base, SpaceMasking)
    assert strategy.base.encode_ratio == 0.25 and strategy.decode_only_modalities == ("srtm",)


@pytest.mark.parametrize("name", NAMES)
def test_timing_runs(name: str) -> None:
    """Not a timed assertion: runs a realistic sample (~2300 tokens) and reports ms/sample."""
    tokens = {
        "sentinel2_l2a": np.zeros((8, 8, 12, 3), np.int8),
        "sentinel1": np.zeros((8, 8, 12, 1), np.int8),
        "worldcover": np.zeros((8, 8, 1, 1), np.int8),
        "era5": np.zeros((1, 1, 12, 1), np.int8),
    }
    tokens["sentinel2_l2a"][:, :, [1, 4]] = MIS
    strategy = build_masking(name, decode_only_modalities=["worldcover"])
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(50):
        strategy(tokens, rng)
    print(f"{name}: {(time.perf_counter() - start) / 50 * 1e3:.3f} ms/sample")
