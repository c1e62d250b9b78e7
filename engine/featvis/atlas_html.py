"""A static HTML atlas: an index and one page per unit, images as PNG files, no server needed
(``python -m engine atlas ... --out DIR``; zip the folder and share it, or put it on a course page).

Layout of ``DIR``::

    index.html                  every unit of A (and B) as a grid of thumbnails, sorted by unit;
    index-selectivity.html ...  the same sorted by class selectivity, sparsity, best match;
    units/a-0007.html           unit 7 of A: its visualisation, statistics, top-k images (crops
                                around the top activation, with labels) and its best matches in B;
    img/a-0007.png, img/a-0007-top-3.png, img/a-dir-02.png ...

Every link is relative, so the folder works from a file:// URL or any static host. Torch-free:
the images come in as uint8 arrays (``images_of(indices) -> (N, H, W, C) uint8``).
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.featvis.atlas_data import Atlas, crop_box
from engine.featvis.images import png_bytes
from engine.fileio import atomic_write_bytes, atomic_write_text, output_folder

#: index pages: (file, sort key, title); "match" only for two models
SORTS = (("index.html", "unit", "unit"), ("index-selectivity.html", "selectivity", "class selectivity ↓"),
         ("index-sparsity.html", "sparsity", "sparsity ↓"), ("index-match.html", "match", "best-match correlation ↓"))
SIDES = "ab"
#: thumbnails and the detail image are shown this many CSS pixels wide (scaled without smoothing)
THUMB_PX, DETAIL_PX, TOP_PX = 96, 320, 96
_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.grid{display:flex;flex-wrap:wrap;gap:6px}.cell{text-align:center;font-size:12px;width:%dpx}
img{image-rendering:pixelated;border:1px solid #ccc}.row{display:flex;gap:2em;align-items:flex-start}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left}nav a{margin-right:1em}
h2{margin-top:1.5em}.muted{color:#777}""" % THUMB_PX


def export_atlas(atlas: Atlas, images_of: Callable[[Sequence[int]], np.ndarray], out: str | os.PathLike,
                 title: str = "Unit atlas") -> Path:
    """Write the static atlas of ``atlas`` into the folder ``out`` (made if missing); returns the
    index file. ``images_of(indices)`` gives the scanned images (uint8 (N, H, W, C)) for the
    top-k crops."""
    root = output_folder(out)
    for folder in ("units", "img"):
        output_folder(root / folder)
    for side, model in enumerate(atlas.models):
        _write_images(root, atlas, side, images_of)
        for unit in range(len(model.units.mean)):
            atomic_write_text(root / "units" / f"{_unit_id(side, unit)}.html", _unit_page(atlas, side, unit, title),
                              what="atlas page")
    sorts = [s for s in SORTS if s[1] != "match" or atlas.matches is not None]
    for file, key, label in sorts:
        atomic_write_text(root / file, _index_page(atlas, key, label, sorts, title), what="atlas index")
    return root / "index.html"


def _unit_id(side: int, unit: int) -> str:
    return f"{SIDES[side]}-{unit:04d}"


def _write_png(path: Path, image: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(image), what="atlas image")


def _write_images(root: Path, atlas: Atlas, side: int, images_of) -> None:
    """The unit and direction visualisations of model ``side`` and each unit's top-k crops."""
    model = atlas.models[side]
    for unit, image in enumerate(model.images):
        _write_png(root / "img" / f"{_unit_id(side, unit)}.png", image)
    for index, image in enumerate(model.direction_images):
        _write_png(root / "img" / f"{SIDES[side]}-dir-{index:02d}.png", image)
    size = tuple(atlas.image_shape[1:])
    for unit in range(len(model.units.mean)):
        tops = model.units.topk_index[unit]
        for rank, (picture, pos) in enumerate(zip(images_of(tops), model.units.topk_pos[unit])):
            top, left, height, width = crop_box(tuple(int(p) for p in pos), model.grid, size)
            crop = picture[top:top + height, left:left + width]
            _write_png(root / "img" / f"{_unit_id(side, unit)}-top-{rank}.png", crop)


def _figure(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.3f}"


def _order(atlas: Atlas, side: int, key: str) -> list[int]:
    """Units of model ``side`` in the order of ``key`` (descending figures; NaN last)."""
    units = atlas.models[side].units
    count = len(units.mean)
    if key == "unit":
        return list(range(count))
    values = {"selectivity": units.selectivity, "sparsity": units.sparsity,
              "match": atlas.best_match_correlations(side)}[key]
    values = np.where(np.isfinite(values), values, -np.inf)
    return [int(u) for u in np.argsort(-values, kind="stable")]


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>\n")


def _caption(atlas: Atlas, side: int, unit: int, key: str) -> str:
    units = atlas.models[side].units
    if key == "selectivity":
        return _figure(float(units.selectivity[unit]))
    if key == "sparsity":
        return _figure(float(units.sparsity[unit]))
    if key == "match":
        return _figure(float(atlas.best_match_correlations(side)[unit]))
    return ""


def _index_page(atlas: Atlas, key: str, label: str, sorts, title: str) -> str:
    nav = " ".join(f"<a href='{file}'>{html.escape(name)}</a>" for file, _, name in sorts)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='muted'>{html.escape(atlas.dataset)} {atlas.split}, first {atlas.n} images, top-{atlas.k} "
             f"per unit · sorted by {html.escape(label)}</p><nav>Sort by: {nav}</nav>", "<div class='row'>"]
    for side, model in enumerate(atlas.models):
        cells = []
        for unit in _order(atlas, side, key):
            uid = _unit_id(side, unit)
            cells.append(f"<div class='cell'><a href='units/{uid}.html'><img src='img/{uid}.png' width='{THUMB_PX}' "
                         f"alt='unit {unit}'></a><br>{unit} {_caption(atlas, side, unit, key)}</div>")
        directions = "".join(
            f"<div class='cell'><img src='img/{SIDES[side]}-dir-{i:02d}.png' width='{THUMB_PX}' alt='direction {i}'>"
            f"<br>dir {i}</div>" for i in range(len(model.direction_images)))
        parts.append(f"<section><h2>{SIDES[side].upper()}: {html.escape(model.name)} · {html.escape(model.layer)} "
                     f"({len(model.units.mean)} units)</h2>"
                     + (f"<h3>Random directions (baseline)</h3><div class='grid'>{directions}</div>" if directions else "")
                     + f"<h3>Units</h3><div class='grid'>{''.join(cells)}</div></section>")
    parts.append("</div>")
    return _page(title, "".join(parts))


def _unit_page(atlas: Atlas, side: int, unit: int, title: str) -> str:
    model = atlas.models[side]
    units = model.units
    uid = _unit_id(side, unit)
    count = len(units.mean)
    nav = ["<a href='../index.html'>index</a>"]
    if unit > 0:
        nav.append(f"<a href='{_unit_id(side, unit - 1)}.html'>← unit {unit - 1}</a>")
    if unit + 1 < count:
        nav.append(f"<a href='{_unit_id(side, unit + 1)}.html'>unit {unit + 1} →</a>")
    stats = "".join(f"<tr><th>{name}</th><td>{_figure(float(value))}</td></tr>" for name, value in (
        ("mean activation", units.mean[unit]), ("max activation", units.max[unit]),
        ("sparsity (share ≤ 0)", units.sparsity[unit]), ("class selectivity", units.selectivity[unit])))
    tops = "".join(
        f"<div class='cell'><img src='../img/{uid}-top-{rank}.png' width='{TOP_PX}' alt='top {rank}'><br>"
        f"{html.escape(_label(atlas, side, unit, rank))}<br>{_figure(float(units.topk_score[unit][rank]))}</div>"
        for rank in range(units.topk_index.shape[1]))
    matches = "".join(
        f"<div class='cell'><a href='{_unit_id(1 - side, other)}.html'><img src='../img/{_unit_id(1 - side, other)}.png' "
        f"width='{THUMB_PX}' alt='unit {other}'></a><br>{SIDES[1 - side].upper()} {other} · r = {_figure(corr)}</div>"
        for other, corr in atlas.match(side, unit))
    body = (f"<nav>{' '.join(nav)}</nav><h1>{SIDES[side].upper()} {html.escape(model.name)} · "
            f"{html.escape(model.layer)} · unit {unit}</h1><div class='row'><img src='../img/{uid}.png' "
            f"width='{DETAIL_PX}' alt='unit {unit}'><table>{stats}</table></div>"
            f"<h2>Top {units.topk_index.shape[1]} images (crop around the top activation)</h2>"
            f"<div class='grid'>{tops}</div>"
            + (f"<h2>Best matches in {SIDES[1 - side].upper()} ({html.escape(atlas.models[1 - side].name)})</h2>"
               f"<div class='grid'>{matches}</div>" if matches else ""))
    return _page(f"{title}: {SIDES[side].upper()} unit {unit}", body)


def _label(atlas: Atlas, side: int, unit: int, rank: int) -> str:
    """The class name of a unit's ``rank``-th top image."""
    label = int(atlas.models[side].units.topk_label[unit][rank])
    return atlas.class_names[label] if 0 <= label < len(atlas.class_names) else str(label)
