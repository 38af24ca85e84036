"""PNG quicklooks of results that a person can read without guessing.

Each quicklook shows the raster (read from its overviews, so memory stays bounded; small
rasters are enlarged with nearest-neighbour so one pixel stays one square), a title with the
output's name and kind, the CRS, pixel size and raster size, a scale bar, and a key:

- class maps: a legend of every class with its colour, name and share of the mapped area;
- probabilities: the most probable class, with the same legend;
- continuous outputs (regression, one to three bands): band 1 in viridis over its 2-98 %
  range, with a colour bar naming the band and its units;
- embeddings (more than three bands): the first three principal components as RGB, with the
  share of the variance each explains.

No-data pixels are drawn in mid grey and named in the key.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import CRSError, NotGeoreferencedWarning

from helios.runner.core.fsutil import atomic_path
from helios.runner.core.rasters import TAG_CLASSES, TAG_KIND, TAG_NAME, default_colormap

NODATA_RGB: tuple[int, ...] = (158, 158, 158)
"""Mid grey: unlike white, it cannot be mistaken for a bright class (cloud, snow)."""
IMAGE_PX = (480, 720)
"""The image's longest side in the PNG: small rasters are enlarged to the first, large ones
shrunk to the second."""
PCA_VALUES = 16_000_000
"""At most this many values (pixels x bands) are read for an embedding quicklook."""


@dataclass
class View:
    """What a quicklook shows: the image and its key."""

    rgba: np.ndarray
    """uint8 [h, w, 4]."""
    legend: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    """(label, RGB) entries of a class key."""
    colorbar: tuple[float, float, str] | None = None
    """(low, high, label) of a continuous key (viridis)."""
    note: str = ""


def _header(src: Any) -> dict[str, Any]:
    tags = src.tags()
    integer = np.dtype(src.dtypes[0]).kind in "iu"
    return {
        "tags": tags,
        "kind": tags.get(TAG_KIND, "classification" if integer else "regression"),
        "name": tags.get(TAG_NAME) or Path(src.name).stem,
        "count": src.count,
        "nodata": src.nodata,
        "descriptions": src.descriptions,
        "units": src.units,
    }


def _display_shape(width: int, height: int, max_values: int | None = None) -> tuple[int, int]:
    """(rows, cols) to read: at most IMAGE_PX[1] per side (and `max_values` pixels)."""
    scale = max(1.0, max(width, height) / IMAGE_PX[1])
    if max_values is not None:
        scale = max(scale, math.sqrt(width * height / max_values))
    return max(1, round(height / scale)), max(1, round(width / scale))


def _valid(data: np.ndarray, nodata: float | None) -> np.ndarray:
    ok = np.all(np.isfinite(data), axis=0)
    if nodata is not None and not math.isnan(nodata):
        ok &= np.all(data != nodata, axis=0)
    return ok


def _paint(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    rgba = np.empty((*valid.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.where(valid[..., None], rgb, np.array(NODATA_RGB, dtype=np.uint8))
    rgba[..., 3] = 255
    return rgba


def _classes_view(
    classes: np.ndarray, valid: np.ndarray, names: dict[int, str], cmap: dict[int, tuple]
) -> View:
    values = sorted(set(names) | {int(v) for v in np.unique(classes[valid])})
    colours = {**default_colormap(values), **cmap}
    rgb = np.zeros((*classes.shape, 3), dtype=np.uint8)
    legend: list[tuple[str, tuple[int, ...]]] = []
    total = max(1, int(valid.sum()))
    for v in values:
        sel = (classes == v) & valid
        colour = tuple(int(c) for c in colours[v][:3])
        rgb[sel] = colour
        share = 100.0 * sel.sum() / total
        legend.append((f"{v}  {names.get(v, str(v))}  ({share:.1f} %)", colour))
    if not valid.all():
        legend.append(("no data", NODATA_RGB))
    return View(_paint(rgb, valid), legend)


def _continuous_view(band: np.ndarray, valid: np.ndarray, label: str) -> View:
    from matplotlib import colormaps

    lo, hi = np.percentile(band[valid], [2, 98]) if valid.any() else (0.0, 1.0)
    lo, hi = float(lo), float(hi) if hi > lo else float(lo) + 1.0
    norm = np.clip((np.nan_to_num(band) - lo) / (hi - lo), 0, 1)
    rgb = (colormaps["viridis"](norm)[..., :3] * 255).astype(np.uint8)
    legend: list[tuple[str, tuple[int, ...]]] = [] if valid.all() else [("no data", NODATA_RGB)]
    return View(_paint(rgb, valid), legend, colorbar=(lo, hi, label))


def _pca_view(data: np.ndarray, valid: np.ndarray) -> View:
    """The first three principal components of [C, h, w] as RGB, each stretched 2-98 %."""
    flat = data.reshape(data.shape[0], -1).T[valid.ravel()].astype(np.float64)
    rgb = np.zeros((*valid.shape, 3), dtype=np.uint8)
    note = "no valid pixels"
    if len(flat) >= 2:
        flat -= flat.mean(0)
        _, s, vt = np.linalg.svd(flat[:: max(1, len(flat) // 20000)], full_matrices=False)
        comps = flat @ vt[:3].T
        share = 100 * s[:3] ** 2 / max(float((s**2).sum()), 1e-12)
        lo, hi = np.percentile(comps, [2, 98], axis=0)
        scaled = np.clip((comps - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
        rgb.reshape(-1, 3)[valid.ravel(), : comps.shape[1]] = (scaled * 255).astype(np.uint8)
        note = (
            "an embedding view:\n"
            f"RGB = principal components 1-3\nof the {data.shape[0]} bands "
            f"({', '.join(f'{p:.0f}' for p in share)} %\nof the variance), each\n"
            "stretched over its 2-98 % range"
        )
    legend: list[tuple[str, tuple[int, ...]]] = [] if valid.all() else [("no data", NODATA_RGB)]
    return View(_paint(rgb, valid), legend, note=note)


def _band_label(head: dict[str, Any]) -> str:
    desc = head["descriptions"][0] or head["name"]
    unit = head["units"][0] if head["units"] else ""
    if head["kind"] == "probabilities":
        unit = unit or "probability, 0-1"
    return f"{desc} ({unit or 'no units recorded'})"


def read_view(src: Any) -> View:
    """The view of an open raster (see the module docstring)."""
    head = _header(src)
    kind, count = head["kind"], head["count"]
    if kind == "regression" and count > 3:
        shape = _display_shape(src.width, src.height, PCA_VALUES // count)
        data = src.read(out_shape=(count, *shape)).astype(np.float32)
        return _pca_view(data, _valid(data, head["nodata"]))
    shape = _display_shape(src.width, src.height)
    bands = list(range(1, count + 1)) if kind == "probabilities" else [1]
    data = src.read(bands, out_shape=(len(bands), *shape)).astype(np.float32)
    valid = _valid(data, head["nodata"])
    if kind == "probabilities" and count > 1:
        classes = np.argmax(np.nan_to_num(data, nan=-np.inf), axis=0)
        names = {i: d or str(i) for i, d in enumerate(head["descriptions"])}
        view = _classes_view(classes, valid, names, {})
        view.note = f"the most probable of {count} classes"
        return view
    if kind == "classification":
        try:
            cmap = {int(k): tuple(v) for k, v in src.colormap(1).items()}
        except ValueError:
            cmap = {}
        names = {int(k): v for k, v in json.loads(head["tags"].get(TAG_CLASSES, "{}")).items()}
        cmap = {k: v for k, v in cmap.items() if k in names or (data[0] == k).any()}
        return _classes_view(np.nan_to_num(data[0]).astype(np.int64), valid, names, cmap)
    view = _continuous_view(data[0], valid, _band_label(head))
    if count > 1:
        view.note = f"band 1 of {count}"
    return view


def write_quicklook(cog: Path, png: Path, max_size: int = IMAGE_PX[1]) -> Path:
    """Write the PNG quicklook of a result (atomically); returns `png`."""
    with rasterio.open(cog) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        view = read_view(src)
        head = _header(src)
        geo = {
            "crs": src.crs,
            "res": (abs(src.transform.a), abs(src.transform.e)),
            "size": (src.width, src.height),
            "center_y": src.transform.f + src.transform.e * src.height / 2,
        }
    with atomic_path(png) as tmp:
        render(view, head, geo, tmp, max_size)
    return png


def _metres_per_unit(crs: Any, center_y: float) -> float | None:
    """Ground metres per CRS unit along x (None without a CRS)."""
    if crs is None:
        return None
    if crs.is_geographic:
        return 111_320.0 * math.cos(math.radians(max(-89.0, min(89.0, center_y))))
    try:
        return float(crs.linear_units_factor[1])
    except CRSError:  # a CRS without linear units
        return None


def _nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 x 10^k metres not above `metres`."""
    k = 10 ** math.floor(math.log10(max(metres, 1e-9)))
    return max(m * k for m in (1, 2, 5) if m * k <= metres) if metres >= k else k


def _unit_name(crs: Any) -> str:
    if crs is None:
        return "pixel-unit"
    if crs.is_geographic:
        return "degree"
    try:
        name = str(crs.linear_units_factor[0])
    except CRSError:
        return "CRS-unit"
    return "m" if name in ("metre", "meter") else name


def _crs_text(crs: Any) -> str:
    if crs is None:
        return "no CRS"
    import pyproj

    code = crs.to_string()
    name = pyproj.CRS.from_user_input(code).name
    return f"{code} ({name})" if name and name != code else code


def _scale_bar(ax: Any, geo: dict[str, Any], width_px: int, height_px: int) -> None:
    """A bar of a round length, about a quarter of the image wide, in the lower left."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    per_unit = _metres_per_unit(geo["crs"], geo["center_y"])
    if not per_unit:
        return
    metres_per_px = geo["res"][0] * per_unit * geo["size"][0] / width_px
    length = _nice_length(width_px * metres_per_px / 4)
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    bar = AnchoredSizeBar(
        ax.transData,
        length / metres_per_px,
        label,
        "lower left",
        pad=0.4,
        color="black",
        frameon=True,
        size_vertical=max(1.0, height_px / 150),
    )
    bar.patch.set_alpha(0.8)
    ax.add_artist(bar)


def _key(fig: Any, view: View, box: tuple[float, float, float, float]) -> None:
    """The colour bar, class legend and note, in `box` (left, bottom, width, height; 0-1)."""
    from matplotlib.patches import Patch

    left, bottom, _, height = box
    fw = fig.get_size_inches()[0] * fig.dpi
    if view.colorbar is not None:
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        lo, hi, label = view.colorbar
        cax = fig.add_axes((left + 10 / fw, bottom, 18 / fw, height))
        mappable = ScalarMappable(Normalize(lo, hi), colormaps["viridis"])
        fig.colorbar(mappable, cax=cax).set_label(f"{label}, 2-98 % range", fontsize=8)
        left += 110 / fw
    if view.legend:
        handles = [
            Patch(facecolor=f"#{c[0]:02x}{c[1]:02x}{c[2]:02x}", edgecolor="black", lw=0.5, label=t)
            for t, c in view.legend
        ]
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(left, bottom + height),
            fontsize=8,
            frameon=False,
            title=None if view.colorbar else "class (share of the mapped area)",
            title_fontsize=8,
        )
    if view.note:
        fig.text(left, bottom, view.note, fontsize=8, va="bottom")


def render(
    view: View, head: dict[str, Any], geo: dict[str, Any], path: Path, max_size: int
) -> None:
    """Draw `view` with its title, CRS line, scale bar and key into a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = view.rgba.shape[:2]
    side = min(max_size, max(IMAGE_PX[0], min(IMAGE_PX[1], max(geo["size"]))))
    zoom = side / max(h, w)
    img_w, img_h, key_w, top, bottom, dpi = w * zoom, h * zoom, 270, 70, 40, 100
    fig = Figure(figsize=((img_w + key_w + 30) / dpi, (img_h + top + bottom) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    fw, fh = fig.get_size_inches() * dpi
    ax = fig.add_axes((15 / fw, bottom / fh, img_w / fw, img_h / fh))
    ax.imshow(view.rgba, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    rx, ry = geo["res"]
    centre = (img_w + 30) / 2 / fw
    bands = f", {head['count']} bands" if head["count"] > 1 else ""
    title = f"{head['name']}  ({head['kind']}{bands})"
    fig.text(centre, 1 - 24 / fh, title, ha="center", va="center", fontsize=12, weight="bold")
    unit = _unit_name(geo["crs"])
    facts = f"{_crs_text(geo['crs'])} · {rx:g} x {ry:g} {unit} pixels · "
    facts += f"{geo['size'][0]} x {geo['size'][1]} px"
    fig.text(centre, 1 - 48 / fh, facts, ha="center", va="center", fontsize=8)
    _scale_bar(ax, geo, w, h)
    _key(fig, view, ((img_w + 30) / fw, bottom / fh, key_w / fw, img_h / fh))
    fig.savefig(path, format="png", dpi=dpi, facecolor="white")
