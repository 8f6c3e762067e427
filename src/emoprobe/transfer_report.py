"""The report's cross-dataset transfer charts (jobs.transfer_probe's table) and a paragraph, per model:
at the residual stream (else the first site) and the position nearest the end."""

from __future__ import annotations

import html

import altair as alt
import polars as pl

from .positions import nearest_end
from .shards import RESIDUAL


def _view(transfer: pl.DataFrame, model: str) -> pl.DataFrame:
    data = transfer.filter(model=model, metric="accuracy")
    site = RESIDUAL if RESIDUAL in set(data["site"]) else data["site"][0]
    return data.filter(site=site, position=nearest_end(data["position"].unique().to_list()))


def best_layer(data: pl.DataFrame) -> int:
    """The layer with the highest mean transfer accuracy over the pairs."""
    return (data.filter(kind="transfer").group_by("layer").agg(pl.col("value").mean())
            .sort("value", descending=True)["layer"][0])


def transfer_matrix(transfer: pl.DataFrame, model: str) -> alt.Chart:
    data = _view(transfer, model)
    layer = best_layer(data)
    at = data.filter(layer=layer)
    cells = (at.filter(kind="transfer").join(at.filter(kind="in_domain").select(
        "source", "target", pl.col("value").alias("in_domain")), on=["source", "target"])
        .with_columns(text=pl.format("{} ({})", pl.col("value").round(2), pl.col("in_domain").round(2))))
    base = alt.Chart(cells).encode(x=alt.X("target:N", title="tested on"), y=alt.Y("source:N", title="trained on"))
    rect = base.mark_rect().encode(
        color=alt.Color("value:Q", title="transfer accuracy", scale=alt.Scale(scheme="viridis")),
        tooltip=["source", "target", "shared_labels", alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f"),
                 alt.Tooltip("in_domain:Q", format=".3f")])
    text = base.mark_text(fontSize=11, color="white").encode(text="text:N")
    return (rect + text).properties(width=300, height=300, title={
        "text": f"{model}: cross-dataset transfer at layer {layer}",
        "subtitle": [f"logistic probe trained on all of one dataset's texts with the shared labels, tested on the "
                     f"other's ({at['site'][0]}, position {at['position'][0]});",
                     "in brackets: the target's own k-fold CV accuracy on the same labels; the layer of the highest "
                     "mean transfer accuracy"]})


def transfer_by_layer(transfer: pl.DataFrame, model: str) -> alt.LayerChart:
    data = _view(transfer, model).with_columns(pair=pl.format("{} → {}", "source", "target"))
    base = alt.Chart(data).encode(x=alt.X("layer:Q"), color=alt.Color("pair:N"),
                                  strokeDash=alt.StrokeDash("kind:N", sort=["transfer", "in_domain"]))
    band = base.mark_area(opacity=0.1).encode(y="ci_low:Q", y2="ci_high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("value:Q", title="accuracy on the target's texts"),
        tooltip=["pair", "kind", "layer", "shared_labels", alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f")])
    return alt.layer(band, line).properties(width=520, height=300, title={
        "text": f"{model}: transfer accuracy by layer",
        "subtitle": ["solid: trained on the source, tested on the target; dashed: the target's own CV on the shared "
                     "labels; band: 95% bootstrap CI over the target's texts"]})


def reading(transfer: pl.DataFrame, model: str) -> str:
    data = _view(transfer, model)
    layer = best_layer(data)
    at = data.filter(layer=layer).sort("source", "target")
    pairs = []
    for row in at.filter(kind="transfer").iter_rows(named=True):
        own = at.filter(kind="in_domain", source=row["source"], target=row["target"])["value"][0]
        pairs.append(f"{row['source']} → {row['target']} {row['value']:.3f} [{row['ci_low']:.3f}, "
                     f"{row['ci_high']:.3f}] (in-domain {own:.3f}; {row['shared_labels']})")
    return f"Transfer of the probe across datasets at layer {layer} (the highest mean): " + "; ".join(pairs) + "."


def transfer_section(transfer: pl.DataFrame | None, model: str) -> tuple[list, str]:
    """([(figure name, chart)], a paragraph as HTML) of a model's transfer, if any was measured."""
    if transfer is None or transfer.filter(model=model).is_empty():
        return [], ""
    return ([("transfer_matrix", transfer_matrix(transfer, model)), ("transfer_by_layer", transfer_by_layer(transfer, model))],
            f"<p>{html.escape(reading(transfer, model))}</p>")
