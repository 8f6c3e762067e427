"""The report's figure files: one theme for every chart, and each chart written as an offline
interactive page, a PNG for the screen, and an SVG and a PDF sized for a two-column paper.

The paper files drop the chart's title and subtitle (its legend sentences), which go to the
figure list of methods.md as the caption, and put legends below the plot. They are drawn 3.5 inches wide (one
column) when every font then stays at least `MIN_FONT_PT` points, else 7 inches (the full page
width); the SVG and the PDF carry that physical size, so a paper includes them at 100%.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import vl_convert

# Okabe & Ito's colour-blind-safe qualitative palette (black moved last: lines drawn in black
# mark the baselines).
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000"]
FONT = "DejaVu Sans"  # shipped with vl-convert's renderer and Debian alike: the PNG, SVG and PDF match
PAPER_WIDTHS_IN = {"column": 3.5, "full": 7.0}  # a two-column paper's column and page widths
MIN_FONT_PT = 6.5
COLUMN_PLOT_PX = 260  # the plot width a single chart gets in its paper version
VEGA_BUNDLE = "vega.js"  # Vega, Vega-Lite and vega-embed in one file beside index.html


@alt.theme.register("emoprobe", enable=True)
def theme() -> alt.theme.ThemeConfig:
    """Font, sizes and the categorical palette of every chart."""
    return {"config": {
        "font": FONT,
        "range": {"category": OKABE_ITO},
        "axis": {"labelFontSize": 10, "titleFontSize": 11, "titleFontWeight": "normal"},
        "legend": {"labelFontSize": 10, "titleFontSize": 11, "titleFontWeight": "normal", "symbolOpacity": 1},
        "header": {"labelFontSize": 11, "titleFontSize": 11},
        "title": {"fontSize": 12, "subtitleFontSize": 10, "anchor": "start"},
        "text": {"fontSize": 10},
        "view": {"stroke": None},
    }}


PAPER_CONFIG = {"legend": {"orient": "bottom", "direction": "horizontal", "columns": 4}}


def categorical(field_name: str, domain: Sequence, title: str | None = None) -> alt.Color:
    """A colour by category whose colours follow `domain`'s order, so that one name (a model, a
    probe, a site, a position) keeps its colour in every figure that is given the same domain."""
    domain = list(domain)
    return alt.Color(f"{field_name}:N", title=title or field_name, sort=domain,
                     scale=alt.Scale(domain=domain, range=[OKABE_ITO[i % len(OKABE_ITO)] for i in range(len(domain))]))


@dataclass
class Figure:
    """One written figure: its files, its title and legend (the caption), and its paper width."""
    stem: Path
    title: str
    legend: list[str] = field(default_factory=list)
    width: str = "column"
    min_font_pt: float = 0.0


def write_vega_bundle(out_dir: Path) -> Path:
    """Vega, Vega-Lite and vega-embed as one classic script, which every interactive page loads
    from beside index.html instead of from the internet."""
    path = Path(out_dir) / VEGA_BUNDLE
    path.write_text(vl_convert.javascript_bundle(), encoding="utf-8")
    return path


def save(chart, stem: Path, bundle: Path) -> Figure:
    """Write `stem`.html (interactive, loading `bundle`), .png (screen, 2x), .svg and .pdf (paper)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    spec = chart.to_dict()
    script = Path(_relative(bundle, stem.parent))
    payload = json.dumps(spec).replace("</", "<\\/")  # no "</script>" inside the script
    stem.with_suffix(".html").write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(_title_text(spec))}</title>'
        f'<script src="{script.as_posix()}"></script></head><body><div id="chart"></div><script>'
        f'vegaEmbed("#chart", {payload}, {{"actions": false}}).catch(console.error);'
        "</script></body></html>\n", encoding="utf-8")
    stem.with_suffix(".png").write_bytes(vl_convert.vegalite_to_png(spec, scale=2))
    figure = Figure(stem, _title_text(spec), _subtitle(spec))
    column = _paper_spec(spec)
    svg = vl_convert.vegalite_to_svg(column, config=PAPER_CONFIG)
    for width in PAPER_WIDTHS_IN:
        if width == "full" and column != (full := _paper_spec(spec, narrow=False)):
            svg = vl_convert.vegalite_to_svg(full, config=PAPER_CONFIG)  # only a narrowed chart is redrawn
        scale = PAPER_WIDTHS_IN[width] * 72 / float(re.search(r'<svg[^>]* width="([\d.]+)"', svg).group(1))
        figure.width = width
        figure.min_font_pt = min(map(float, re.findall(r'font-size="([\d.]+)px"', svg))) * scale
        if figure.min_font_pt >= MIN_FONT_PT:
            break
    inches = PAPER_WIDTHS_IN[figure.width]
    stem.with_suffix(".svg").write_text(_sized(svg, inches, "in"), encoding="utf-8")
    # vl-convert's PDF page takes the SVG's size in pixels as points
    stem.with_suffix(".pdf").write_bytes(vl_convert.svg_to_pdf(_sized(svg, inches * 72, "")))
    return figure


def _paper_spec(spec: dict, narrow: bool = True) -> dict:
    """The chart without its title (the caption carries it); single charts `narrow` drawn
    COLUMN_PLOT_PX wide."""
    paper = json.loads(json.dumps(spec))
    paper.pop("title", None)
    if narrow and isinstance(paper.get("width"), (int, float)) and paper["width"] > COLUMN_PLOT_PX:
        paper["height"] = math.ceil(paper.get("height", 300) * max(0.6, COLUMN_PLOT_PX / paper["width"]))
        paper["width"] = COLUMN_PLOT_PX
    return paper


def _sized(svg: str, width: float, unit: str) -> str:
    """The SVG drawn `width` `unit`s wide (its viewBox keeps the drawing, the height follows)."""
    pixels, height = (float(v) for v in re.search(r'<svg[^>]* width="([\d.]+)" height="([\d.]+)"', svg).groups())
    return re.sub(r'(<svg[^>]*?) width="[\d.]+" height="[\d.]+"',
                  rf'\1 width="{width:g}{unit}" height="{width * height / pixels:.3f}{unit}"', svg, count=1)


def _title_text(spec: dict) -> str:
    title = spec.get("title", "")
    text = title.get("text", "") if isinstance(title, dict) else title
    return " ".join(text) if isinstance(text, list) else str(text)


def _subtitle(spec: dict) -> list[str]:
    title = spec.get("title")
    subtitle = title.get("subtitle", []) if isinstance(title, dict) else []
    return [subtitle] if isinstance(subtitle, str) else [line for line in subtitle if line]


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())
