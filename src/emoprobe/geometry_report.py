"""The report's charts of the probe geometry (jobs.probe_geometry's table) and one paragraph reading
them, per model x dataset."""

from __future__ import annotations

import html

import altair as alt
import polars as pl

SETTLED = 0.9  # adjacent layers whose directions' mean cosine exceeds this have settled


def _title(model: str, dataset: str, text: str, subtitle: list[str], note: str) -> dict:
    return {"text": f"{model} on {dataset}: {text}", "subtitle": [*subtitle, *([note] if note else [])]}


def _map_layer(data: pl.DataFrame) -> int:
    """The layer the emotion map shows: where the RSA is highest, else the deepest."""
    rsa = data.filter(analysis="rsa")
    if not rsa.is_empty():
        return rsa.sort("value", descending=True)["layer"][0]
    return data.filter(analysis="principal_map")["layer"].max()


def settled_layer(data: pl.DataFrame) -> int | None:
    """The first layer whose directions' mean cosine with the next layer's exceeds SETTLED."""
    mean = data.filter(analysis="layer_similarity", emotion="mean")
    cosine = {(a, b): value for a, b, value in mean.select("layer", "layer_b", "value").iter_rows()}
    layers = sorted(mean["layer"].unique())
    return next((a for a, b in zip(layers, layers[1:]) if cosine[a, b] > SETTLED), None)


def layer_similarity_heatmap(data: pl.DataFrame, model: str, dataset: str, note: str) -> alt.Chart:
    cells = data.filter(analysis="layer_similarity", emotion="mean")
    return alt.Chart(cells).mark_rect().encode(
        x=alt.X("layer:O"), y=alt.Y("layer_b:O", title="layer", sort="descending"),
        color=alt.Color("value:Q", title="cosine", scale=alt.Scale(scheme="viridis")),
        tooltip=["layer", "layer_b", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=360, height=360, title=_title(
        model, dataset, "where the probe directions settle",
        [f"cosine of each emotion's {cells['probe'][0]} direction at two layers (residual stream, position "
         f"{cells['position'][0]}), mean over emotions"], note))


def emotion_map(data: pl.DataFrame, model: str, dataset: str, note: str) -> alt.HConcatChart:
    layer = _map_layer(data)
    coordinates = (data.filter(analysis="principal_map", layer=layer).filter(pl.col("emotion").is_not_null())
                   .pivot("metric", index="emotion", values="value"))
    explained = dict(data.filter(analysis="principal_map", layer=layer).filter(pl.col("emotion").is_null())
                     .select("metric", "value").iter_rows())
    base = alt.Chart(coordinates).encode(
        x=alt.X("pc1:Q", title=f"PC1 ({explained['explained_pc1']:.0%})"),
        y=alt.Y("pc2:Q", title=f"PC2 ({explained['explained_pc2']:.0%})"))
    scatter = (base.mark_point(filled=True) + base.mark_text(dy=-8, fontSize=10).encode(text="emotion:N")
               ).properties(width=300, height=300, title="principal map of the directions")
    cosine = alt.Chart(data.filter(analysis="emotion_similarity", layer=layer)).mark_rect().encode(
        x=alt.X("emotion:N"), y=alt.Y("emotion_b:N", title="emotion"),
        color=alt.Color("value:Q", title="cosine", scale=alt.Scale(scheme="redblue", domainMid=0)),
        tooltip=["emotion", "emotion_b", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=300, height=300, title="cosine of the directions")
    return alt.hconcat(scatter, cosine).resolve_scale(color="independent").properties(title=_title(
        model, dataset, f"the emotions' directions at layer {layer}",
        ["the layer where the RSA with the human appraisal profiles is highest" if not data.filter(
            analysis="rsa").is_empty() else "the deepest layer"], note))


def rsa_by_layer(data: pl.DataFrame, model: str, dataset: str, note: str) -> alt.LayerChart:
    rsa = data.filter(analysis="rsa")
    base = alt.Chart(rsa).encode(x=alt.X("layer:Q"))
    band = base.mark_area(opacity=0.15).encode(y="ci_low:Q", y2="ci_high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("value:Q", title="Spearman r, model vs human similarity"),
        tooltip=["layer", alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
                 alt.Tooltip("ci_high:Q", format=".3f"), alt.Tooltip("p_value:Q", format=".4f")])
    zero = alt.Chart().mark_rule(color="gray").encode(y=alt.datum(0))
    return alt.layer(band, line, zero).properties(width=520, height=300, title=_title(
        model, dataset, "emotion space against the human one",
        ["rank correlation over emotion pairs between the cosine of the probe directions and the cosine of the "
         "emotions' mean", "(z-scored) human appraisal profiles; band: 95% bootstrap CI over emotions"], note))


def reading(data: pl.DataFrame) -> str:
    """What the geometry shows, with numbers."""
    settled = settled_layer(data)
    text = (f"The probe directions settle (mean cosine with the next layer's above {SETTLED}) from layer {settled}."
            if settled is not None else f"The probe directions never settle (no adjacent layers above {SETTLED}).")
    rsa = data.filter(analysis="rsa")
    if not rsa.is_empty():
        best = rsa.sort("value", descending=True).row(0, named=True)
        valence = data.filter(analysis="valence", layer=best["layer"])
        text += (f" The emotion space looks most like the human one at layer {best['layer']}: Spearman r "
                 f"{best['value']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}] with the emotions' mean "
                 f"appraisal profiles (permutation p {best['p_value']:.4f}); "
                 f"{rsa.filter(pl.col('ci_low') > 0).height} of {rsa.height} layers have a CI above 0."
                 + (f" There the first principal component follows the humans' mean pleasantness with "
                    f"|r| = {valence['value'][0]:.3f}." if not valence.is_empty() else ""))
    return text


def geometry_section(geometry: pl.DataFrame | None, model: str, dataset: str, note: str) -> tuple[list, str]:
    """([(figure name, chart)], a paragraph as HTML) for model x dataset, if its geometry was computed."""
    data = None if geometry is None else geometry.filter(model=model, dataset=dataset)
    if data is None or data.is_empty():
        return [], ""
    charts = [("direction_layer_similarity", layer_similarity_heatmap(data, model, dataset, note)),
              ("emotion_map", emotion_map(data, model, dataset, note))]
    if not data.filter(analysis="rsa").is_empty():
        charts.append(("rsa_by_layer", rsa_by_layer(data, model, dataset, note)))
    return charts, f"<p>{html.escape(reading(data))}</p>"
