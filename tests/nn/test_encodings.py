import torch

from helios.nn.encodings import TokenEncodings, month_encoding, token_centers


def test_space_encoding_scales_with_patch_size() -> None:
    enc = TokenEncodings(["sentinel1"], 32)
    # a patch-4 token and the patch-2 token at the same ground centre share the space code
    p2 = enc({"sentinel1": torch.zeros(1, 4, 4, 1, 1, 32)}, torch.ones(1, 1, 3), 2)["sentinel1"]
    p4 = enc({"sentinel1": torch.zeros(1, 2, 2, 1, 1, 32)}, torch.ones(1, 1, 3), 4)["sentinel1"]
    centres2, centres4 = (
        token_centers(4, 4, 2, torch.device("cpu")),
        token_centers(2, 2, 4, torch.device("cpu")),
    )
    assert torch.equal(centres4[0, 0], torch.tensor([2.0, 2.0]))
    assert torch.equal(centres2[0, 0], torch.tensor([1.0, 1.0]))
    assert not torch.allclose(p2[0, 0, 0], p4[0, 0, 0])
    # space occupies the last quarter only
    assert not torch.allclose(p2[..., 24:], p2[:, :1, :1, ..., 24:].expand_as(p2[..., 24:]))


def test_quarters_and_static_modalities() -> None:
    enc = TokenEncodings(["sentinel2_l2a", "srtm", "era5"], 32)
    ts = torch.tensor([[[1, 1, 2020], [1, 7, 2020]]])
    out = enc(
        {
            "sentinel2_l2a": torch.zeros(1, 2, 2, 2, 3, 32),
            "srtm": torch.zeros(1, 2, 2, 1, 1, 32),
            "era5": torch.zeros(1, 1, 1, 2, 1, 32),
        },
        ts,
        1,
    )
    assert (out["srtm"][..., 8:24] == 0).all()  # no time or month code for static layers
    assert (out["era5"][..., 24:] == 0).all()  # no space code for non-spatial tokens
    assert not torch.allclose(out["sentinel2_l2a"][0, 0, 0, 0], out["sentinel2_l2a"][0, 0, 0, 1])
    assert not torch.allclose(out["sentinel2_l2a"][..., 0, :8], out["sentinel2_l2a"][..., 1, :8])


def test_month_encoding_is_cyclic() -> None:
    m = month_encoding(torch.tensor([1, 13, 7]), 16)
    torch.testing.assert_close(m[0], m[1], atol=1e-5, rtol=0)
    assert not torch.allclose(m[0], m[2])


def test_rope_mode_leaves_space_quarter_free() -> None:
    enc = TokenEncodings(["sentinel1"], 32, position="rope")
    out = enc({"sentinel1": torch.zeros(1, 3, 3, 2, 1, 32)}, torch.ones(1, 2, 3), 2)["sentinel1"]
    assert (out[..., 24:] == 0).all()
    pos = TokenEncodings.positions({"sentinel1": out, "era5": torch.zeros(1, 1, 1, 2, 1, 32)}, 2)
    assert pos["sentinel1"].shape == (1, 3, 3, 2, 1, 2)
    assert torch.equal(pos["era5"][0, 0, 0, 0, 0], torch.tensor([3.0, 3.0]))
