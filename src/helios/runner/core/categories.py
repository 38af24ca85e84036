"""Class rasters that GDAL and QGIS show by name: a PAM sidecar and a QGIS style beside them.

A class map `<stem>.tif` (window output or mosaic) gets, next to its colour table and its
`CLASS_NAMES` tag:

- `<stem>.tif.aux.xml`, GDAL's PAM sidecar, which GDAL reads with the file by itself: band 1's
  category names (`gdalinfo` lists them, `GDALGetRasterCategoryNames`) and a thematic raster
  attribute table with columns Value, Class, Red, Green, Blue, Alpha (QGIS 3.30+ styles a
  layer from it, ArcGIS shows it);
- `<stem>.qml`, a QGIS paletted-renderer style with a label per class, which QGIS loads as
  the layer's default style when the raster is opened.

The no-data value is named `no data` in both, so a click in QGIS says what it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from helios.runner.core.fsutil import write_text

NODATA_LABEL = "no data"
_RAT_COLUMNS = (  # name, GDALRATFieldType (0 int, 2 string), GDALRATFieldUsage
    ("Value", 0, 5),  # GFU_MinMax: the pixel value
    ("Class", 2, 2),  # GFU_Name
    ("Red", 0, 6),
    ("Green", 0, 7),
    ("Blue", 0, 8),
    ("Alpha", 0, 9),
)


def pam_path(tif: Path) -> Path:
    """`<file>.aux.xml`, where GDAL looks for a raster's PAM metadata."""
    return tif.with_name(tif.name + ".aux.xml")


def qml_path(tif: Path) -> Path:
    """`<stem>.qml`, the style QGIS loads with a raster by default."""
    return tif.with_suffix(".qml")


def _entries(
    names: Mapping[int, str],
    colormap: Mapping[int, Sequence[int]],
    nodata: float | None,
) -> list[tuple[int, str, tuple[int, int, int, int]]]:
    """(value, label, RGBA) of every class, and of the no-data value when it is an integer.

    The classes are the named values; without names, the colour table's entries (GDAL pads a
    table to 256 entries with black, which are left out).
    """
    padding = {(0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 255)}
    values = set(names) or {v for v, c in colormap.items() if tuple(c) not in padding}
    nodata_value = int(nodata) if nodata is not None and float(nodata).is_integer() else None
    if nodata_value is not None and nodata_value >= 0:
        values.add(nodata_value)
    out = []
    for v in sorted(values):
        colour = tuple(colormap.get(v, (0, 0, 0, 0)))
        rgba = (*colour[:3], colour[3] if len(colour) > 3 else 255)
        label = NODATA_LABEL if v == nodata_value and v not in names else names.get(v, str(v))
        alpha = 0 if v == nodata_value and v not in names else rgba[3]
        out.append((v, label, (rgba[0], rgba[1], rgba[2], alpha)))
    return out


def pam_xml(entries: list[tuple[int, str, tuple[int, int, int, int]]]) -> str:
    """The PAM document: band 1's category names and raster attribute table."""
    top = max(v for v, _, _ in entries)
    by_value = {v: label for v, label, _ in entries}
    categories = "".join(
        f"      <Category>{escape(by_value.get(v, ''))}</Category>\n" for v in range(top + 1)
    )
    fields = "".join(
        f'      <FieldDefn index="{i}">\n        <Name>{name}</Name>\n'
        f"        <Type>{kind}</Type>\n        <Usage>{usage}</Usage>\n      </FieldDefn>\n"
        for i, (name, kind, usage) in enumerate(_RAT_COLUMNS)
    )
    rows = "".join(
        f'      <Row index="{i}">\n'
        + "".join(f"        <F>{escape(str(x))}</F>\n" for x in (v, label, *rgba))
        + "      </Row>\n"
        for i, (v, label, rgba) in enumerate(entries)
    )
    return (
        "<PAMDataset>\n"
        '  <PAMRasterBand band="1">\n'
        f"    <CategoryNames>\n{categories}    </CategoryNames>\n"
        f'    <GDALRasterAttributeTable tableType="thematic">\n{fields}{rows}'
        "    </GDALRasterAttributeTable>\n"
        "  </PAMRasterBand>\n"
        "</PAMDataset>\n"
    )


def qml_xml(entries: list[tuple[int, str, tuple[int, int, int, int]]]) -> str:
    """A QGIS paletted-renderer style (QGIS 3), one labelled entry per class."""
    palette = "".join(
        f'        <paletteEntry value="{v}" color="#{r:02x}{g:02x}{b:02x}" alpha="{a}" '
        f"label={quoteattr(label)}/>\n"
        for v, label, (r, g, b, a) in entries
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" '
        'nodataColor="">\n'
        "      <rasterTransparency/>\n"
        f"      <colorPalette>\n{palette}      </colorPalette>\n"
        "    </rasterrenderer>\n"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )


def write_class_styles(
    tif: Path,
    names: Mapping[int, str],
    colormap: Mapping[int, Sequence[int]],
    nodata: float | None = None,
) -> list[Path]:
    """Write `<tif>.aux.xml` and `<stem>.qml` for a class map (atomically); returns them.

    Args:
        tif: The class raster (band 1 holds class values).
        names: Class value -> label; values without a name are labelled by their number.
        colormap: Class value -> (r, g, b[, a]), as in the raster's colour table.
        nodata: The raster's no-data value, labelled `no data` and drawn transparent.

    """
    entries = _entries(names, colormap, nodata)
    if not entries:
        return []
    written = [(pam_path(tif), pam_xml(entries)), (qml_path(tif), qml_xml(entries))]
    for path, text in written:
        write_text(path, text)
    return [path for path, _ in written]
