"""Galileo (nasaharvest/galileo, MIT) behind the Helios encoder surface.

How Helios modalities feed Galileo's channel groups (see docs/baselines.md):

- sentinel2 (L1C, what Galileo was trained on) or sentinel2_l2a -> S2_RGB (B02 B03 B04),
  S2_Red_Edge (B05 B06 B07), S2_NIR_10m (B08), S2_NIR_20m (B8A), S2_SWIR (B11 B12); B01, B09 and
  B10 are unused. NDVI is masked by default, as in Galileo's own eval wrapper; with
  `include_ndvi` it is computed from B08 and B04 reflectances.
- landsat (Landsat-8/9 OLI, only with `landsat_as_s2`, the default, and only for samples without
  Sentinel-2 data) -> the same S2 groups by spectral correspondence, as HLS pairs the sensors:
  B2 B3 B4 -> S2_RGB, B5 -> S2_NIR_10m and S2_NIR_20m, B6 B7 -> S2_SWIR (`LANDSAT_AS_S2`).
  OLI has no red-edge bands, so S2_Red_Edge is masked for those samples; B1, the pan band B8,
  cirrus B9 and thermal B10 B11 are unused.
- sentinel1 (dB) -> S1 (VV VH).
- srtm -> SRTM (elevation, and slope in degrees computed from it on the 10 m grid).
- worldcover -> DW: Galileo's land-cover input is Dynamic World class probabilities, so WorldCover
  classes become one-hot DW classes (`WORLDCOVER_TO_DW`), plus their tile mean in DW_static.
- worldcereal -> WC (WorldCereal products, seasons merged by max), plus WC_static.
- era5 -> ERA5 (2 m temperature in K, total precipitation in m; the other variables unused).
- `batch.latlon` -> location, with `include_latlon` (off by default, as in Galileo's eval).

Galileo's WC group is WorldCereal (not WorldCover) and its LS group is LandScan population
(not Landsat): Galileo never saw Landsat, the adapter above is an approximation, and TC, VIIRS
and LS are always masked.

Galileo's own statistics are for Sentinel-2 L1C reflectance x 10000. For landsat the normalizer
maps Level-1 digital numbers to top-of-atmosphere reflectance with the standard OLI rescaling
(`LANDSAT_L1_REFLECTANCE`: 2e-5 DN - 0.1, no sun-angle correction) and then applies the stats of
the corresponding S2 band. With Landsat the eval should rather use the benchmark's own
statistics (`normalization: dataset`); see docs/baselines.md.

Tokens come back under Galileo's four group families (`TOKEN_GROUPS` lists the S axis):
"galileo_space_time" [B, h, w, T, 7, D], "galileo_space" [B, h, w, 1, 3, D], "galileo_time"
[B, 1, 1, T, 3, D] and "galileo_static" [B, 1, 1, 1, 4, D]; a group without input is MISSING.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from helios.data.modalities import get_modality
from helios.data.normalize import Normalizer, NormMethod
from helios.data.sample import MaskedBatch, MaskValue
from helios.evals.baselines._common import (
    band_visibility,
    hidden_mask_value,
    load_strict,
    load_weights,
    to_pixels,
)
from helios.evals.baselines._galileo_nn import (
    FAMILIES,
    GALILEO_SIZES,
    GalileoArch,
    GalileoNet,
)
from helios.evals.baselines._galileo_tables import (
    DEFAULT_MONTH,
    DW_CLASSES,
    ERA5_BANDS,
    LANDSAT_AS_S2,
    LANDSAT_L1_REFLECTANCE,
    LANDSAT_S2_GROUPS,
    PUBLISHED_NORMALIZATION,
    S2_GROUPS,
    S2_OPTICAL,
    TOKEN_GROUPS,
    WORLDCEREAL_TO_WC,
    WORLDCOVER_TO_DW,
    galileo_norm_stats,
)
from helios.nn.api import Encoder, TokensAndMasks

GalileoSize = Literal["nano", "tiny", "base"]
Groups = dict[str, Tensor]
"""Per Galileo group: inputs, token visibility or token mask values."""


class GalileoEncoder(GalileoNet, Encoder):
    """Galileo's encoder reading `MaskedBatch`es normalized by `self.normalizer`.

    The module's own parameters carry exactly the published `encoder.pt` keys.
    """

    modalities: tuple[str, ...] = (
        "sentinel2",
        "sentinel2_l2a",
        "landsat",
        "sentinel1",
        "srtm",
        "worldcover",
        "worldcereal",
        "era5",
    )
    default_patch_size = 4
    """Patch size (10 m pixels) of Galileo's published evaluations; 1 to 8 were trained."""

    def __init__(
        self,
        weights: str | Path | None = None,
        size: GalileoSize = "nano",
        normalization: str | Path | None = None,
        include_ndvi: bool = False,
        include_latlon: bool = False,
        landsat_as_s2: bool = True,
    ) -> None:
        """Build at `size`; load `weights` (a local `encoder.pt`) strictly if given.

        `normalization` is a Galileo normalization.json; by default the published statistics.
        `landsat_as_s2` feeds Landsat OLI bands into the S2 groups for samples without
        Sentinel-2 data (module docstring); without it `landsat` is not among `modalities`.
        """
        super().__init__(GALILEO_SIZES[size])
        self.size = size
        self.include_ndvi = include_ndvi
        self.include_latlon = include_latlon
        self.landsat_as_s2 = landsat_as_s2
        if not landsat_as_s2:
            self.modalities = tuple(m for m in type(self).modalities if m != "landsat")
        payload: Mapping[str, Any] = PUBLISHED_NORMALIZATION
        if normalization is not None:
            payload = json.loads(Path(normalization).read_text())
        stats, self.slope_stats = galileo_norm_stats(payload)
        self.normalizer = Normalizer(stats, NormMethod.NORM_NO_CLIP_2_STD)
        if weights is not None:
            # upstream strips a ".backbone" that some of its checkpoints carry in key names
            state = {k.replace(".backbone", ""): v for k, v in load_weights(weights).items()}
            load_strict(self, state, str(weights))
        self.eval()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        include_ndvi: bool = False,
        include_latlon: bool = False,
        landsat_as_s2: bool = True,
    ) -> GalileoEncoder:
        """Load a Galileo model folder (config.json, encoder.pt, optional normalization.json).

        `path` may also be the `encoder.pt` file itself; its folder's config.json, if any,
        gives the size (nano otherwise).
        """
        path = Path(path).expanduser()
        folder, weights = (path, path / "encoder.pt") if path.is_dir() else (path.parent, path)
        size: GalileoSize = "nano"
        if (folder / "config.json").is_file():
            enc = json.loads((folder / "config.json").read_text())["model"]["encoder"]
            size = _size_of(enc, str(folder / "config.json"))
        norm = folder / "normalization.json"
        norm_file = norm if norm.is_file() else None
        return cls(weights, size, norm_file, include_ndvi, include_latlon, landsat_as_s2)

    def forward(self, batch: MaskedBatch, view: int = 0) -> TokensAndMasks:
        """Encode the ENCODER tokens of `batch.masks[view]` (see module docstring for keys)."""
        b, h, w, t = self._grid(batch, view)
        inputs, vis, vals = self.group_inputs(batch, view)
        month = batch.timestamps[..., 1].long() - 1
        months = torch.where((month >= 0) & (month < 12), month, DEFAULT_MONTH)
        tokens = self.encode_groups(inputs, vis, months, batch.patch_size)
        return self._pack(tokens, vis, vals, b, h, w, t)

    def _grid(self, batch: MaskedBatch, view: int) -> tuple[int, int, int, int]:
        """(B, h, w, T) of the token grid; raises when no spatial modality is present."""
        masks = batch.masks[view]
        present = [m for m in self.modalities if m in batch.data and m in masks]
        spatial = [m for m in present if get_modality(m).is_spatial]
        if not spatial:
            raise ValueError(
                f"Galileo needs a spatial modality of {self.modalities}, got {present}"
            )
        h, w = masks[spatial[0]].shape[1:3]
        return batch.batch_size, h, w, batch.timestamps.shape[1]

    def group_inputs(self, batch: MaskedBatch, view: int = 0) -> tuple[Groups, Groups, Groups]:
        """Galileo's group inputs, token visibility and token mask values for `batch`.

        This is what `forward` hands to `encode_groups` (groups without input are absent).
        """
        self._grid(batch, view)
        masks = batch.masks[view]
        present = [m for m in self.modalities if m in batch.data and m in masks]
        inputs: dict[str, Tensor] = {}
        vis: dict[str, Tensor] = {}
        vals: dict[str, Tensor] = {}
        self._optical(batch, view, present, inputs, vis, vals)
        if "sentinel1" in present:
            self._take(batch, view, "sentinel1", ("vv", "vh"), "S1", inputs, vis, vals)
        if "srtm" in present:
            self._srtm(batch, view, inputs, vis, vals)
        if "worldcover" in present:
            self._worldcover(batch, view, inputs, vis, vals)
        if "worldcereal" in present:
            self._worldcereal(batch, view, inputs, vis, vals)
        if "era5" in present:
            self._take(batch, view, "era5", ERA5_BANDS, "ERA5", inputs, vis, vals)
            for d in (inputs, vis, vals):
                d["ERA5"] = d["ERA5"][:, 0, 0]  # non-spatial: [B, 1, 1, T, ...] -> [B, T, ...]
        if self.include_latlon:
            self._location(batch, inputs, vis, vals)
        return inputs, vis, vals

    def _optical(
        self,
        batch: MaskedBatch,
        view: int,
        present: list[str],
        inputs: Groups,
        vis: Groups,
        vals: Groups,
    ) -> None:
        """The S2 groups (and NDVI) from sentinel2 / sentinel2_l2a, else from landsat.

        The choice is per sample: a sample uses Landsat only when none of its S2 group tokens
        has data (all MISSING), e.g. the samples of a Landsat-only benchmark.
        """
        s2 = next((m for m in S2_OPTICAL if m in present), None)
        use_landsat = self.landsat_as_s2 and "landsat" in present
        sources = []
        if s2 is not None:
            sources.append(self._s2_groups(batch, view, s2, S2_GROUPS, "B04", "B08"))
        if use_landsat:
            sources.append(self._s2_groups(batch, view, "landsat", LANDSAT_S2_GROUPS, "B4", "B5"))
        if len(sources) == 1:
            for out, got in zip((inputs, vis, vals), sources[0]):
                out.update(got)
        if len(sources) < 2:
            return
        (s2_in, s2_vis, s2_vals), (l_in, l_vis, l_vals) = sources
        has_s2 = torch.stack(
            [(s2_vals[g] != MaskValue.MISSING).flatten(1).any(1) for g in S2_GROUPS], 1
        ).any(1)
        for g in s2_in:
            if g in l_in:
                li, lv, lm = l_in[g], l_vis[g], l_vals[g]
            else:  # no Landsat counterpart (S2_Red_Edge): masked where Landsat stands in
                li, lv = torch.zeros_like(s2_in[g]), torch.zeros_like(s2_vis[g])
                lm = torch.full_like(s2_vals[g], int(MaskValue.MISSING))
            inputs[g] = torch.where(_per_sample(has_s2, li), s2_in[g], li)
            vis[g] = torch.where(_per_sample(has_s2, lv), s2_vis[g], lv)
            vals[g] = torch.where(_per_sample(has_s2, lm), s2_vals[g], lm)

    def _s2_groups(
        self,
        batch: MaskedBatch,
        view: int,
        modality: str,
        groups: Mapping[str, tuple[str, ...]],
        red: str,
        nir: str,
    ) -> tuple[Groups, Groups, Groups]:
        """Fill Galileo's S2 `groups` from `modality` bands, plus NDVI with `include_ndvi`."""
        inputs: dict[str, Tensor] = {}
        vis: dict[str, Tensor] = {}
        vals: dict[str, Tensor] = {}
        for g, bands in groups.items():
            self._take(batch, view, modality, bands, g, inputs, vis, vals)
        if self.include_ndvi:
            self._ndvi(batch, view, modality, red, nir, inputs, vis, vals)
        return inputs, vis, vals

    def _take(
        self,
        batch: MaskedBatch,
        view: int,
        modality: str,
        bands: tuple[str, ...],
        group: str,
        inputs: dict[str, Tensor],
        vis: dict[str, Tensor],
        vals: dict[str, Tensor],
    ) -> None:
        """Copy `bands` of `modality` into `group`, zeroed outside visible tokens."""
        spec = get_modality(modality)
        v, val = band_visibility(batch, view, modality, bands)
        x = batch.data[modality][..., [spec.band_index(bd) for bd in bands]]
        x = torch.where(to_pixels(v, x.shape[1], x.shape[2])[..., None], x, 0.0)
        if spec.is_multitemporal:
            inputs[group], vis[group], vals[group] = x, v, val
        else:  # static: drop the length-1 time axis
            inputs[group], vis[group], vals[group] = x[:, :, :, 0], v[..., 0], val[..., 0]

    def _raw(self, modality: str, x: Tensor, band: str) -> Tensor:
        """Undo `self.normalizer` for one band."""
        a, bb = self.normalizer.bounds(modality)
        i = get_modality(modality).band_index(band)
        return x * float(bb[i] - a[i]) + float(a[i])

    def _reflectance(self, modality: str, x: Tensor, band: str) -> Tensor:
        """Raw values of one band on a reflectance scale (S2: x 10000; Landsat DN: rescaled)."""
        raw = self._raw(modality, x, band)
        if modality == "landsat":
            gain, offset = LANDSAT_L1_REFLECTANCE
            raw = raw * gain + offset
        return raw

    def _ndvi(
        self,
        batch: MaskedBatch,
        view: int,
        modality: str,
        red_band: str,
        nir_band: str,
        inputs: Groups,
        vis: Groups,
        vals: Groups,
    ) -> None:
        v, val = band_visibility(batch, view, modality, (red_band, nir_band))
        spec, x = get_modality(modality), batch.data[modality]
        red = self._reflectance(modality, x[..., spec.band_index(red_band)], red_band)
        nir = self._reflectance(modality, x[..., spec.band_index(nir_band)], nir_band)
        total = nir + red
        ndvi = torch.where(total > 0, (nir - red) / total.where(total > 0, 1.0), 0.0)
        pix = to_pixels(v, x.shape[1], x.shape[2])
        inputs["NDVI"], vis["NDVI"], vals["NDVI"] = torch.where(pix, ndvi, 0.0)[..., None], v, val

    def _srtm(
        self, batch: MaskedBatch, view: int, inputs: Groups, vis: Groups, vals: Groups
    ) -> None:
        self._take(batch, view, "srtm", ("srtm",), "SRTM", inputs, vis, vals)
        elev = inputs["SRTM"]  # [B, H, W, 1], normalized
        raw = self._raw("srtm", elev[..., 0], "srtm")
        padded = F.pad(raw[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
        dz_dy = (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]) / (2 * 10.0)
        dz_dx = (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) / (2 * 10.0)
        slope = torch.rad2deg(torch.atan(torch.sqrt(dz_dx**2 + dz_dy**2)))
        mean, std = self.slope_stats
        slope = (slope - (mean - 2 * std)) / (4 * std)
        pix = to_pixels(vis["SRTM"], elev.shape[1], elev.shape[2])
        inputs["SRTM"] = torch.cat([elev, torch.where(pix, slope, 0.0)[..., None]], dim=-1)

    def _worldcover(
        self, batch: MaskedBatch, view: int, inputs: Groups, vis: Groups, vals: Groups
    ) -> None:
        v, val = band_visibility(batch, view, "worldcover", ("B1",))
        code = batch.data["worldcover"][:, :, :, 0, 0].round().long()  # identity-normalized
        lut = torch.full((256,), -1, dtype=torch.long, device=code.device)
        for wc_code, dw in WORLDCOVER_TO_DW.items():
            lut[wc_code] = DW_CLASSES.index(dw)
        idx = lut[code.clamp(0, 255)]
        ok = idx >= 0  # codes outside 0..255 clamp onto unmapped entries
        tok_ok = _all_in_tokens(ok, v.shape[1], v.shape[2])
        v = v[..., 0] & tok_ok
        val = torch.where(tok_ok, val[..., 0], int(MaskValue.MISSING)).to(torch.int8)
        pix = to_pixels(v, code.shape[1], code.shape[2]) & ok
        onehot = F.one_hot(idx.clamp(min=0), len(DW_CLASSES)).to(batch.data["worldcover"].dtype)
        inputs["DW"], vis["DW"], vals["DW"] = onehot * pix[..., None], v, val
        self._static_mean("DW", inputs["DW"], pix, inputs, vis, vals)

    def _worldcereal(
        self, batch: MaskedBatch, view: int, inputs: Groups, vis: Groups, vals: Groups
    ) -> None:
        spec = get_modality("worldcereal")
        v, val = band_visibility(batch, view, "worldcereal", spec.band_order)
        x = batch.data["worldcereal"][:, :, :, 0]  # normalized to value / 100
        cols = [
            torch.stack([x[..., spec.band_index(bd)] for bd in src], -1).amax(-1)
            for src in WORLDCEREAL_TO_WC.values()
        ]
        pix = to_pixels(v[..., 0], x.shape[1], x.shape[2])
        inputs["WC"] = torch.where(pix[..., None], torch.stack(cols, -1), 0.0)
        vis["WC"], vals["WC"] = v[..., 0], val[..., 0]
        self._static_mean("WC", inputs["WC"], pix, inputs, vis, vals)

    @staticmethod
    def _static_mean(
        group: str, x: Tensor, pix: Tensor, inputs: Groups, vis: Groups, vals: Groups
    ) -> None:
        """Tile-mean of a space group's visible pixels as its static twin (e.g. DW_static)."""
        n = pix.flatten(1).sum(1)
        mean = (x * pix[..., None]).flatten(1, 2).sum(1) / n.clamp(min=1)[:, None]
        ok = n > 0
        inputs[f"{group}_static"], vis[f"{group}_static"] = mean, ok
        vals[f"{group}_static"] = torch.where(ok, 0, int(MaskValue.MISSING)).to(torch.int8)

    @staticmethod
    def _location(batch: MaskedBatch, inputs: Groups, vis: Groups, vals: Groups) -> None:
        lat, lon = (torch.deg2rad(batch.latlon[:, i].float()) for i in (0, 1))
        xyz = torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)
        ok = (batch.latlon[:, 0].abs() <= 90) & (batch.latlon[:, 1].abs() <= 180)
        inputs["location"], vis["location"] = torch.where(ok[:, None], xyz, 0.0), ok
        vals["location"] = torch.where(ok, 0, int(MaskValue.MISSING)).to(torch.int8)

    def _pack(
        self, tokens: Groups, vis: Groups, vals: Groups, b: int, h: int, w: int, t: int
    ) -> TokensAndMasks:
        """Stack groups into the four family outputs in the Helios [B, h, w, T, S, D] layout."""
        shapes = {
            "space_time": (b, h, w, t),
            "space": (b, h, w, 1),
            "time": (b, 1, 1, t),
            "static": (b, 1, 1, 1),
        }
        out_t: dict[str, Tensor] = {}
        out_m: dict[str, Tensor] = {}
        ref = next(iter(tokens.values()))
        for fam, groups in FAMILIES.items():
            if not any(g in tokens for g in groups):
                continue
            shape = shapes[fam]
            toks, ms = [], []
            for g in groups:
                if g in tokens:
                    toks.append(tokens[g].reshape(*shape, self.embed_dim))
                    ms.append(hidden_mask_value(vals[g], vis[g]).reshape(shape))
                else:
                    toks.append(ref.new_zeros(*shape, self.embed_dim))
                    ms.append(
                        torch.full(
                            shape, int(MaskValue.MISSING), dtype=torch.int8, device=ref.device
                        )
                    )
            out_t[f"galileo_{fam}"] = torch.stack(toks, dim=-2)
            out_m[f"galileo_{fam}"] = torch.stack(ms, dim=-1)
        return TokensAndMasks(out_t, out_m)


def _per_sample(flag: Tensor, like: Tensor) -> Tensor:
    """[B] -> [B, 1, ...] broadcastable against `like`."""
    return flag.reshape(-1, *([1] * (like.ndim - 1)))


def _all_in_tokens(ok: Tensor, h: int, w: int) -> Tensor:
    """[B, H, W] bool -> [B, h, w]: True where every pixel of the token is True."""
    b, hh, ww = ok.shape
    return ok.reshape(b, h, hh // h, w, ww // w).all(dim=4).all(dim=2)


def _size_of(enc: Mapping[str, Any], source: str) -> GalileoSize:
    """The preset matching a config's encoder dimensions."""
    for name, arch in GALILEO_SIZES.items():
        if (enc.get("embedding_size"), enc.get("depth"), enc.get("num_heads")) == (
            arch.embedding_size,
            arch.depth,
            arch.num_heads,
        ):
            return name  # type: ignore[return-value]
    raise ValueError(f"{source}: encoder {dict(enc)} matches no Galileo size {list(GALILEO_SIZES)}")


__all__ = [
    "LANDSAT_AS_S2",
    "LANDSAT_L1_REFLECTANCE",
    "GalileoArch",
    "GalileoEncoder",
    "TOKEN_GROUPS",
    "WORLDCOVER_TO_DW",
    "galileo_norm_stats",
]
