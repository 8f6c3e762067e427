"""Altair figures (HTML + PNG through vl-convert) and the index page of a run."""

from __future__ import annotations

import html
from pathlib import Path

import altair as alt
import polars as pl

from .aggregate import majority_rate, select, summarise

alt.data_transformers.disable_max_rows()


def _accuracy(metrics: pl.DataFrame, probe: str = "logreg") -> pl.DataFrame:
    return select(metrics, probe).with_columns(low=pl.col("mean") - pl.col("std").fill_null(0),
                                               high=pl.col("mean") + pl.col("std").fill_null(0))


def _baselines(metrics: pl.DataFrame) -> pl.DataFrame:
    """Chance (1 / n_classes) and majority-class accuracy per (model, dataset)."""
    majority = majority_rate(metrics).rename({"majority": "value"}).with_columns(baseline=pl.lit("majority class"))
    chance = (metrics.group_by("model", "dataset").agg((1.0 / pl.col("n_classes").first()).alias("value"))
              .with_columns(baseline=pl.lit("chance")))
    return pl.concat([majority.select(chance.columns), chance])


def _baseline_rules(baselines: pl.DataFrame) -> alt.LayerChart:
    """Dashed, labelled horizontal lines for chance and the majority-class rate."""
    base = alt.Chart(baselines).encode(y="value:Q", tooltip=["baseline", alt.Tooltip("value:Q", format=".3f")])
    labels = base.mark_text(align="right", dx=-4, dy=alt.ExprRef("datum.baseline == 'chance' ? 8 : -6"),
                            color="gray", fontSize=10).encode(x=alt.value(515), text="baseline:N")
    return base.mark_rule(strokeDash=[4, 4], color="gray") + labels


def accuracy_by_layer(metrics: pl.DataFrame, model: str, dataset: str, note: str) -> alt.LayerChart:
    """Held-out accuracy by layer, one line per position, band = +-1 std over folds."""
    keep = (pl.col("model") == model) & (pl.col("dataset") == dataset)
    data = _accuracy(metrics.filter(keep))
    positions = sorted(data["position"].unique().to_list(), reverse=True)
    base = alt.Chart(data).encode(x=alt.X("layer:Q", title="layer (0 = embeddings)"),
                                  color=alt.Color("position:N", title="position", sort=positions))
    band = base.mark_area(opacity=0.15).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title="probe accuracy (CV mean)", scale=alt.Scale(domain=[0, 1])),
        tooltip=["layer", "position", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("std:Q", format=".3f")])
    rules = _baseline_rules(_baselines(metrics.filter(keep)))
    return (band + line + rules).properties(
        title={"text": f"{model} on {dataset}", "subtitle": note}, width=520, height=300)


def layer_position_heatmap(metrics: pl.DataFrame, model: str, dataset: str, note: str) -> alt.Chart:
    keep = (pl.col("model") == model) & (pl.col("dataset") == dataset)
    data = _accuracy(metrics.filter(keep))
    return alt.Chart(data).mark_rect().encode(
        x=alt.X("layer:O"), y=alt.Y("position:O", sort="descending"),
        color=alt.Color("mean:Q", title="accuracy", scale=alt.Scale(scheme="viridis")),
        tooltip=["layer", "position", alt.Tooltip("mean:Q", format=".3f")],
    ).properties(title={"text": f"{model} on {dataset}: layer x position", "subtitle": note},
                 width=520, height=160)


def relative_depth(metrics: pl.DataFrame, position: int) -> alt.Chart:
    """All models on one chart: accuracy at `position` against layer / n_layers, per dataset."""
    data = (_accuracy(metrics).filter(pl.col("position") == position)
            .with_columns(relative_depth=pl.col("layer") / pl.col("n_layers")))
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("relative_depth:Q", title="relative depth (layer / n_layers)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("mean:Q", title="probe accuracy (CV mean)", scale=alt.Scale(domain=[0, 1])),
        color="model:N", tooltip=["model", "layer", alt.Tooltip("mean:Q", format=".3f")],
    ).properties(width=420, height=260, title=f"All models, position {position}").facet(
        column=alt.Column("dataset:N"))


def save(chart, stem: Path) -> list[Path]:
    """Write `stem`.html and `stem`.png."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    chart.save(str(stem.with_suffix(".html")))
    chart.save(str(stem.with_suffix(".png")), scale_factor=2)
    return [stem.with_suffix(".html"), stem.with_suffix(".png")]


def model_note(quantisation: str | None) -> str:
    return f"weights quantised ({quantisation}) before de-quantisation to float" if quantisation else ""


def build_report(metrics: pl.DataFrame, out_dir: Path, quantisation: dict[str, str | None],
                 tolerance: float) -> Path:
    """Write every figure and results/report/index.html; return the index path."""
    out_dir = Path(out_dir)
    positions = sorted(metrics["position"].unique().to_list(), reverse=True)
    sections = []
    for model, dataset in metrics.select("model", "dataset").unique().sort("model", "dataset").iter_rows():
        note = model_note(quantisation.get(model))
        stem = out_dir / model / dataset
        save(accuracy_by_layer(metrics, model, dataset, note), stem / "accuracy_by_layer")
        save(layer_position_heatmap(metrics, model, dataset, note), stem / "layer_position_heatmap")
        sections.append(f"<h2>{html.escape(model)} on {html.escape(dataset)}</h2>"
                        + (f"<p><em>{html.escape(note)}</em></p>" if note else "")
                        + f'<img src="{model}/{dataset}/accuracy_by_layer.png" width="640">'
                        + f'<img src="{model}/{dataset}/layer_position_heatmap.png" width="640">')
    save(relative_depth(metrics, positions[0]), out_dir / "relative_depth")
    summary = summarise(metrics, tolerance)
    summary.write_csv(out_dir / "summary.csv")
    index = out_dir / "index.html"
    index.write_text(_index_page(summary, sections, tolerance), encoding="utf-8")
    return index


def _index_page(summary: pl.DataFrame, sections: list[str], tolerance: float) -> str:
    header = "".join(f"<th>{html.escape(c)}</th>" for c in summary.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"
                         for v in row) + "</tr>"
        for row in summary.iter_rows())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>emoprobe report</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>Where is emotion linearly decodable?</h1>
<p>Held-out accuracy of a standardised multinomial logistic-regression probe (stratified
k-fold cross-validation) on each layer's residual stream at the last prompt tokens.
<code>first_layer_within_tolerance</code>: first layer whose accuracy, at the best position,
is within {tolerance} of the best. Full table: <code>results/metrics/probe_metrics.csv</code>.</p>
<table><tr>{header}</tr>{body}</table>
<h2>All models by relative depth</h2><img src="relative_depth.png" width="1000">
{''.join(sections)}
</body></html>
"""
