"""Altair figures (HTML + PNG through vl-convert) and the index page of a run."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import altair as alt
import polars as pl

from .aggregate import majority_rate, scored, select, summarise
from .answer_metrics import TOP1_METRIC, confusion
from .figures import Figure, categorical, save, write_vega_bundle
from .geometry_report import geometry_section
from .interventions.report import causal_section
from .transfer_report import transfer_section
from .positions import TEXT_MEAN, nearest_end, sort_order
from .registry import ANSWER, control_name
from .shards import RESIDUAL, SITES

alt.data_transformers.disable_max_rows()


CI_BAND = "band: 95% bootstrap CI of the pooled held-out score"
ANSWER_COLOUR = "saddlebrown"  # apart from the positions' palette
METRIC_TITLES = {"accuracy": "probe accuracy (CV mean)", "r2": "R\u00b2 (CV mean)"}


def _scores(metrics: pl.DataFrame, probe: str = "logreg", metric: str = "accuracy") -> pl.DataFrame:
    """One probe's metric, with low/high = the 95% bootstrap CI of its pooled held-out score."""
    return select(metrics, probe, metric).with_columns(low=pl.col("ci_low"), high=pl.col("ci_high"))


def _of(metrics: pl.DataFrame, model: str, dataset: str) -> pl.DataFrame:
    return metrics.filter((pl.col("model") == model) & (pl.col("dataset") == dataset))


def _residual(metrics: pl.DataFrame) -> pl.DataFrame:
    """The rows of the residual stream, and those of no site (baselines, answers)."""
    return metrics.filter(pl.col("site").is_null() | (pl.col("site") == RESIDUAL))


def _band_and_line(base: alt.Chart, metric: str, domain: list | None = None) -> alt.LayerChart:
    """A CI band (low, high) and a CV-mean line by layer over `base` (which sets data and colour)."""
    base = base.encode(x=alt.X("layer:Q", title="layer (0 = embeddings)"))
    band = base.mark_area(opacity=0.15).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title=METRIC_TITLES[metric], scale=alt.Scale(domain=domain) if domain else alt.Undefined),
        tooltip=["layer", "position", "target", alt.Tooltip("mean:Q", format=".3f"),
                 alt.Tooltip("std:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
                 alt.Tooltip("ci_high:Q", format=".3f")])
    return band + line


def _heatmap(data: pl.DataFrame, rows: alt.Y, metric: str, title: dict, height: int, **scale) -> alt.Chart:
    """Layer x `rows` cells coloured by the CV-mean score."""
    return alt.Chart(data).mark_rect().encode(
        x=alt.X("layer:O"), y=rows,
        color=alt.Color("mean:Q", title=metric, scale=alt.Scale(**scale)),
        tooltip=["layer", "position", "target", alt.Tooltip("mean:Q", format=".3f")],
    ).properties(title=title, width=520, height=height)


def _lexical(metrics: pl.DataFrame, dataset: str, metric: str, layers: list[int]) -> pl.DataFrame:
    """The lexical baseline's CV mean and CI (low, high) per target of `dataset`, repeated at the
    first and last of `layers` so that it draws as a level line and band across the chart."""
    words = _scores(metrics.filter(pl.col("dataset") == dataset), "lexical", metric)
    return pl.concat([words.with_columns(layer=pl.lit(layer, dtype=pl.Int64)) for layer in (min(layers), max(layers))])


def _lexical_layer(data: pl.DataFrame) -> alt.LayerChart:
    """The lexical baseline: a dark dash-dot line over its shaded CI, labelled."""
    base = alt.Chart(data).encode(x="layer:Q")
    band = base.mark_area(opacity=0.12, color="black").encode(y="low:Q", y2="high:Q")
    line = base.mark_line(color="black", strokeDash=[8, 3, 2, 3]).encode(
        y="mean:Q", tooltip=[alt.Tooltip("mean:Q", format=".3f", title="lexical baseline"),
                             alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f")])
    label = base.transform_filter(alt.datum.layer == int(data["layer"].max())).mark_text(
        align="right", dy=-7, fontSize=10).encode(y="mean:Q", text=alt.value("lexical baseline (words only)"))
    return band + line + label


def _baselines(metrics: pl.DataFrame) -> pl.DataFrame:
    """Chance (1 / n_classes) and majority-class accuracy per (model, dataset)."""
    classification = metrics.filter(pl.col("target") == "label")
    majority = (majority_rate(classification).drop("target").rename({"majority": "value"})
                .with_columns(baseline=pl.lit("majority class")))
    chance = (select(classification, "majority").group_by("model", "dataset")
              .agg((1.0 / pl.col("n_classes").first()).alias("value")).with_columns(baseline=pl.lit("chance")))
    return pl.concat([majority.select(chance.columns), chance])


def _baseline_rules(baselines: pl.DataFrame) -> alt.LayerChart:
    """Dashed, labelled horizontal lines for chance and the majority-class rate."""
    base = alt.Chart(baselines).encode(y="value:Q", tooltip=["baseline", alt.Tooltip("value:Q", format=".3f")])
    labels = base.mark_text(align="right", dx=-4, dy=alt.ExprRef("datum.baseline == 'chance' ? 8 : -6"),
                            color="gray", fontSize=10).encode(x=alt.value("width"), text="baseline:N")
    return base.mark_rule(strokeDash=[4, 4], color="gray") + labels


def _answer_layer(answer: pl.DataFrame, layers: list[int]) -> alt.LayerChart:
    """The model's own answer accuracy: a brown level line across `layers` over its CI band, labelled."""
    data = pl.concat([answer.with_columns(layer=pl.lit(layer, dtype=pl.Int64)) for layer in (min(layers), max(layers))])
    base = alt.Chart(data).encode(x="layer:Q")
    tooltip = [alt.Tooltip("mean:Q", format=".3f", title="the model's own answer"),
               alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f")]
    label = base.transform_filter(alt.datum.layer == max(layers)).mark_text(
        align="right", dy=-7, fontSize=10, color=ANSWER_COLOUR).encode(
        y="mean:Q", text=alt.value("the model's own answer"))
    return (base.mark_area(opacity=0.15, color=ANSWER_COLOUR).encode(y="low:Q", y2="high:Q")
            + base.mark_line(color=ANSWER_COLOUR, strokeWidth=2.5).encode(y="mean:Q", tooltip=tooltip) + label)


def accuracy_by_layer(metrics: pl.DataFrame, model: str, dataset: str, note: str,
                      twins: Sequence[str] = (), probe: str = "logreg") -> alt.LayerChart:
    """Held-out accuracy by layer (mean over folds), one line per position, band = the 95% bootstrap
    CI of the pooled held-out accuracy; with the lexical baseline (line and CI band), the model's
    own answer (brown line and CI band; answers.py), and at the
    position nearest the end the shuffled-label control (dotted), the control task (dashed), the
    random-init `twins` (long dashes, with their CI band); majority and chance. `probe`: the
    classification probe drawn."""
    of = _of(metrics, model, dataset)
    data = _scores(of, probe)
    positions = sort_order(data["position"].unique().to_list())
    base = alt.Chart(data).encode(color=categorical("position", positions))
    layers = [_band_and_line(base, "accuracy", [0, 1]), _baseline_rules(_baselines(of))]
    legend = [f"line: mean over folds; {CI_BAND}"]
    for kind, colour, dash, label in (("shuffled", "gray", [2, 2], "dotted gray: shuffled-label control"),
                                      ("control", "purple", [6, 2], "dashed purple: control task, on its own labels")):
        control = _scores(of, control_name(probe, kind)).filter(pl.col("position") == positions[0])
        if control.height:
            layers.append(alt.Chart(control).mark_line(color=colour, strokeDash=dash).encode(
                x="layer:Q", y="mean:Q", tooltip=["layer", alt.Tooltip("mean:Q", format=".3f", title=kind)]))
            legend.append(f"{label} (position {positions[0]})")
    for twin in twins:
        random = _scores(_of(metrics, twin, dataset), probe).filter(pl.col("position") == positions[0]).with_columns(
            twin=pl.lit(f"{twin} (random init)"))
        base = alt.Chart(random).encode(x="layer:Q")
        layers += [base.mark_area(opacity=0.1, color="darkorange").encode(y="low:Q", y2="high:Q"),
                   base.mark_line(color="darkorange", strokeDash=[10, 4]).encode(
                       y="mean:Q", tooltip=["twin", "layer", alt.Tooltip("mean:Q", format=".3f")])]
        legend.append(f"long dashes, orange: {twin}, random-init weights (position {positions[0]}, with CI)")
    lexical = _lexical(metrics, dataset, "accuracy", data["layer"].to_list())
    if lexical.height:
        layers.append(_lexical_layer(lexical))
        legend.append("dash-dot: lexical baseline (TF-IDF of the text alone) with its CI")
    answer = _scores(of, ANSWER)
    if answer.height:
        layers.append(_answer_layer(answer, data["layer"].to_list()))
        legend.append("thick brown: the model's own answer (argmax of the label words' logits at the last position) "
                      "with its CI")
    return alt.layer(*layers).properties(
        title={"text": f"{model} on {dataset}: {probe} accuracy by layer",
               "subtitle": [*legend, *([note] if note else [])]}, width=520, height=300)


def probes_by_layer(metrics: pl.DataFrame, model: str, dataset: str, position: str, classifiers: Sequence[str],
                    note: str) -> alt.LayerChart:
    """Linear against non-linear: every classification probe's accuracy by layer at `position`
    (mean over folds, band = 95% bootstrap CI), with the lexical baseline."""
    of = _of(metrics, model, dataset)
    data = pl.concat([_scores(of, probe) for probe in classifiers]).filter(pl.col("position") == position)
    base = alt.Chart(data).encode(color=categorical("probe", classifiers))
    layers = [_band_and_line(base, "accuracy", [0, 1]), _baseline_rules(_baselines(of))]
    lexical = _lexical(metrics, dataset, "accuracy", data["layer"].to_list())
    if lexical.height:
        layers.append(_lexical_layer(lexical))
    return alt.layer(*layers).properties(
        title={"text": f"{model} on {dataset}: probes compared at position {position}",
               "subtitle": [f"line: mean over folds; {CI_BAND}; dash-dot: lexical baseline with its CI",
                            *([note] if note else [])]}, width=520, height=300)


def selectivity_by_layer(metrics: pl.DataFrame, model: str, dataset: str, note: str,
                         probe: str = "logreg") -> alt.LayerChart:
    """Selectivity (probe accuracy minus control-task accuracy, Hewitt & Liang 2019) by layer, one
    line per position (mean over folds), band = its paired 95% bootstrap CI; dashed: 0."""
    data = _scores(_of(metrics, model, dataset), control_name(probe, "selectivity"))
    positions = sort_order(data["position"].unique().to_list())
    base = alt.Chart(data).encode(x=alt.X("layer:Q", title="layer (0 = embeddings)"),
                                  color=categorical("position", positions))
    band = base.mark_area(opacity=0.15).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title="selectivity (accuracy - control accuracy)"),
        tooltip=["layer", "position", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
                 alt.Tooltip("ci_high:Q", format=".3f")])
    zero = alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(0))
    return alt.layer(band, line, zero).properties(
        title={"text": f"{model} on {dataset}: {probe} selectivity by layer",
               "subtitle": ["line: mean over folds; band: paired 95% bootstrap CI of the pooled difference",
                            *([note] if note else [])]}, width=520, height=260)


def answer_confusion(answers: pl.DataFrame, model: str, dataset: str, note: str) -> alt.LayerChart:
    """The model's answers against the labels: one row per label, cells coloured by the share of
    that label's texts given each answer (rows sum to 1), with the counts written in."""
    data = confusion(answers)
    labels = answers.select("label_id", "label").unique().sort("label_id")["label"].to_list()  # every label, both axes
    base = alt.Chart(data).encode(x=alt.X("answer:N", title="the model's answer", scale=alt.Scale(domain=labels)),
                                  y=alt.Y("label:N", title="label", scale=alt.Scale(domain=labels)))
    cells = base.mark_rect().encode(color=alt.Color("share:Q", title="share of the label's texts",
                                                    scale=alt.Scale(domain=[0, 1], scheme="blues")),
                                    tooltip=["label", "answer", "count", alt.Tooltip("share:Q", format=".3f")])
    counts = base.mark_text(fontSize=9).encode(text="count:Q",
                                               color=alt.condition(alt.datum.share > 0.5, alt.value("white"),
                                                                   alt.value("black")))
    accuracy = answers["correct"].mean()
    return (cells + counts).properties(
        title={"text": f"{model} on {dataset}: the model's own answer (accuracy {accuracy:.3f})",
               "subtitle": ["rows: true labels, normalised to 1; argmax of the label words' first-token logits at the "
                            "last prompt position", *([note] if note else [])]},
        width=max(240, 26 * len(labels)), height=max(200, 22 * len(labels)))


def layer_position_heatmap(metrics: pl.DataFrame, model: str, dataset: str, note: str,
                           probe: str = "logreg") -> alt.Chart:
    data = _scores(_of(metrics, model, dataset), probe)
    return _heatmap(data, alt.Y("position:O", sort=sort_order(data["position"].to_list())), "accuracy",
                    {"text": f"{model} on {dataset}: {probe} accuracy, layer x position", "subtitle": note}, 160,
                    scheme="viridis")


def r2_by_layer(metrics: pl.DataFrame, model: str, dataset: str, position: str, note: str) -> alt.FacetChart:
    """Held-out R2 of the ridge probe by layer at one position, one panel per target; the dashed
    line is the floor, R2 = 0 (predicting the training folds' mean), the dash-dot line and its
    band the lexical baseline with its CI (when computed)."""
    data = (_scores(_of(metrics, model, dataset), "ridge", "r2").filter(pl.col("position") == position)
            .with_columns(kind=pl.lit("probe")))
    floor = alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(0))
    layers = [_band_and_line(alt.Chart().transform_filter(alt.datum.kind == "probe"), "r2"), floor]
    legend = f"line: mean over folds; {CI_BAND}; dashed: floor (mean predictor, R\u00b2 = 0)"
    lexical = _lexical(metrics, dataset, "r2", data["layer"].to_list())
    if lexical.height:
        data = pl.concat([data, lexical.with_columns(kind=pl.lit("lexical"))], how="diagonal_relaxed")
        words = alt.Chart().transform_filter(alt.datum.kind == "lexical").encode(x="layer:Q")
        layers += [words.mark_area(opacity=0.12, color="black").encode(y="low:Q", y2="high:Q"),
                   words.mark_line(color="black", strokeDash=[8, 3, 2, 3]).encode(y="mean:Q")]
        legend += "; dash-dot: lexical baseline with its CI"
    n_targets = data["target"].n_unique()
    return alt.layer(*layers, data=data).properties(
        width=260, height=170).facet(facet=alt.Facet("target:N", title=None), columns=min(n_targets, 4)).properties(
        title={"text": f"{model} on {dataset}: R\u00b2 by layer at position {position}",
               "subtitle": [legend, *([note] if note else [])]})


def target_layer_heatmap(metrics: pl.DataFrame, model: str, dataset: str, position: str, note: str) -> alt.Chart:
    data = _scores(_of(metrics, model, dataset), "ridge", "r2").filter(pl.col("position") == position)
    return _heatmap(data, alt.Y("target:N", sort=None), "R\u00b2",
                    {"text": f"{model} on {dataset}: target x layer (R\u00b2, position {position})",
                     "subtitle": note}, max(80, 18 * data["target"].n_unique()), scheme="blueorange", domainMid=0)


def _site_scores(metrics: pl.DataFrame, model: str, dataset: str, position: str, probe: str) -> pl.DataFrame:
    """One probe's accuracy at `position` at every site of a model x dataset (with low/high, see _scores)."""
    return _scores(_of(metrics, model, dataset).filter(pl.col("site").is_not_null()), probe).filter(position=position)


def sites_by_layer(metrics: pl.DataFrame, model: str, dataset: str, position: str, note: str,
                   probe: str = "logreg") -> alt.LayerChart:
    """Accuracy by layer at `position`, one line per site (residual stream, attention output, MLP
    output; mean over folds, band = 95% bootstrap CI), with the lexical baseline, majority and chance."""
    data = _site_scores(metrics, model, dataset, position, probe)
    base = alt.Chart(data).encode(color=categorical("site", SITES))
    baselines = _baselines(_residual(_of(metrics, model, dataset)))
    layers = [_band_and_line(base, "accuracy", [0, 1]), _baseline_rules(baselines)]
    lexical = _lexical(metrics, dataset, "accuracy", data["layer"].to_list())
    if lexical.height:
        layers.append(_lexical_layer(lexical))
    return alt.layer(*layers).properties(
        title={"text": f"{model} on {dataset}: {probe} accuracy by layer and site, position {position}",
               "subtitle": [f"line: mean over folds; {CI_BAND}; attn_out / mlp_out: what the block's attention / "
                            "MLP sub-block adds to the residual stream (from layer 1)", *([note] if note else [])]},
        width=520, height=300)


def site_layer_heatmap(metrics: pl.DataFrame, model: str, dataset: str, position: str, note: str,
                       probe: str = "logreg") -> alt.Chart:
    return _heatmap(_site_scores(metrics, model, dataset, position, probe), alt.Y("site:N", sort=list(SITES)),
                    "accuracy",
                    {"text": f"{model} on {dataset}: {probe} accuracy, site x layer (position {position})",
                     "subtitle": note}, 90, scheme="viridis")


def relative_depth(metrics: pl.DataFrame, position: str, probe: str = "logreg") -> alt.FacetChart:
    """All models on one chart: the score at `position` against layer / n_layers; one panel per
    dataset and score (`probe`'s accuracy, or ridge's R2 with one line per target), and per site
    where the metrics hold more than one."""
    data = pl.concat([
        _scores(metrics, name, metric).with_columns(panel=pl.format("{} ({} {})", "dataset", pl.lit(name),
                                                                    pl.lit(metric)))
        for name, (metric, _) in scored([probe]).items()
    ]).filter(pl.col("position") == position).with_columns(relative_depth=pl.col("layer") / pl.col("n_layers"))
    if data["site"].n_unique() > 1:
        data = data.with_columns(panel=pl.format("{}, {}", "panel", "site"))
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("relative_depth:Q", title="relative depth (layer / n_layers)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("mean:Q", title="accuracy or R\u00b2 (CV mean)"),
        color=categorical("model", sorted(set(data["model"]))), detail="target:N",
        tooltip=["model", "target", "layer", alt.Tooltip("mean:Q", format=".3f")],
    ).properties(width=360, height=240).facet(
        facet=alt.Facet("panel:N", title=None), columns=3).resolve_scale(y="independent").properties(
        title=f"All models, position {position}")


def model_note(quantisation: str | None) -> str:
    return f"weights quantised ({quantisation}) before de-quantisation to float" if quantisation else ""


def build_report(metrics: pl.DataFrame, out_dir: Path, quantisation: dict[str, str | None],
                 tolerance: float, vs_lexical: pl.DataFrame | None = None,
                 twins: dict[str, list[str]] | None = None, classifiers: Sequence[str] = ("logreg",),
                 answers: dict[tuple[str, str], tuple[pl.DataFrame, pl.DataFrame]] | None = None,
                 causal: pl.DataFrame | None = None, geometry: pl.DataFrame | None = None,
                 transfer: pl.DataFrame | None = None, methods: str = "") -> tuple[Path, list[Figure]]:
    """Write every figure (figures.save: HTML, PNG, SVG, PDF) and results/report/index.html; return
    the index path and the figures.

    The page opens with one headline sentence per model x dataset (`headline`), a table of
    contents and the `methods` section (HTML), then one section per model x dataset, the transfer
    sections and the summary table. Per model and dataset: accuracy figures where it has classes,
    R2 figures (at position -1, or the position nearest the end) where it has numeric targets, all
    of the residual stream; with more sites, accuracy by layer per site and a site x layer heatmap
    (at that position, and again at text_mean where it was read: `<name>_text_mean`); the paired
    comparison with the lexical baseline from `vs_lexical` when given. The first of the
    classification probes `classifiers` is drawn with its controls; with more than one, a chart
    compares them. `answers`: {(model, dataset): (answers table, counts per class)} of the
    models' own answers (answers.py): a confusion matrix, a sentence and the counts per class.
    `causal`: the causal experiments' table (jobs.causal_experiment): per experiment a chart and a
    paragraph reading it, per model x dataset it covers. `geometry`: the probe geometry's table
    (jobs.probe_geometry): its charts and a paragraph, likewise. `transfer`: the cross-dataset
    transfer table (jobs.transfer_probe): per model, a transfer matrix, accuracy by layer and a paragraph.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = write_vega_bundle(out_dir)
    held = metrics["position"].drop_nulls().unique().to_list()
    position = nearest_end(held)
    site_positions = [(position, "")] + ([(TEXT_MEAN, f"_{TEXT_MEAN}")] if TEXT_MEAN in held else [])
    summary = summarise(metrics, tolerance, vs_lexical, classifiers)
    probe = classifiers[0]
    sited, metrics = metrics, _residual(metrics)
    sections, written, headlines = [], [], []
    pairs = metrics.filter(pl.col("model").is_not_null()).select("model", "dataset").unique().sort("model", "dataset")
    for model, dataset in pairs.iter_rows():
        note = model_note(quantisation.get(model))
        probes = set(_of(metrics, model, dataset)["probe"].to_list())
        charts = []
        if probe in probes:
            charts += [("accuracy_by_layer", accuracy_by_layer(metrics, model, dataset, note,
                                                               (twins or {}).get(model, ()), probe)),
                       ("layer_position_heatmap", layer_position_heatmap(metrics, model, dataset, note, probe))]
        if control_name(probe, "selectivity") in probes:
            charts.append(("selectivity_by_layer", selectivity_by_layer(metrics, model, dataset, note, probe)))
        if len(classifiers) > 1 and probe in probes:
            charts.append(("probes_by_layer", probes_by_layer(metrics, model, dataset, position, classifiers, note)))
        if probe in probes and _of(sited, model, dataset)["site"].drop_nulls().n_unique() > 1:
            for at, suffix in site_positions:
                charts += [(f"sites_by_layer{suffix}", sites_by_layer(sited, model, dataset, at, note, probe)),
                           (f"site_layer_heatmap{suffix}", site_layer_heatmap(sited, model, dataset, at, note, probe))]
        if "ridge" in probes:
            charts += [("r2_by_layer", r2_by_layer(metrics, model, dataset, position, note)),
                       ("target_layer_heatmap", target_layer_heatmap(metrics, model, dataset, position, note))]
        answered, counts = (answers or {}).get((model, dataset), (None, None))
        if answered is not None:
            charts.append(("answer_confusion", answer_confusion(answered, model, dataset, note)))
        causal_charts, readings = causal_section(causal, model, dataset, note)
        geometry_charts, geometry_reading = geometry_section(geometry, model, dataset, note)
        charts += causal_charts + geometry_charts
        figures = [save(chart, out_dir / model / dataset / name, bundle) for name, chart in charts]
        written += figures
        headlines.append(headline(summary.filter(model=model, dataset=dataset), model, dataset, classifiers))
        sections.append((f"{model} on {dataset}",
                         (f"<p><em>{html.escape(note)}</em></p>" if note else "")
                         + _beats_the_words(summary.filter(model=model, dataset=dataset))
                         + (_the_answer(answered, counts, _of(metrics, model, dataset)) if answered is not None else "")
                         + readings + geometry_reading + _figure_list(figures, out_dir)))
    for model in sorted(set() if transfer is None else set(transfer["model"])):
        charts, reading = transfer_section(transfer, model)
        figures = [save(chart, out_dir / model / name, bundle) for name, chart in charts]
        written += figures
        sections.append((f"{model}: cross-dataset transfer", reading + _figure_list(figures, out_dir)))
    depth = save(relative_depth(sited, position, probe), out_dir / "relative_depth", bundle)
    written.append(depth)
    sections.insert(0, ("All models by relative depth", _figure_list([depth], out_dir)))
    summary.write_csv(out_dir / "summary.csv")
    index = out_dir / "index.html"
    index.write_text(_index_page(summary, headlines, sections, methods, tolerance), encoding="utf-8")
    return index, written


def headline(summary: pl.DataFrame, model: str, dataset: str, classifiers: Sequence[str]) -> str:
    """The finding for one model x dataset in one sentence with its numbers and its caveat: where
    the first classification probe reads the label best (or, without classes, the best-read
    numeric target), its CI, the lexical baseline with its CI and whether any layer beats it."""
    rows = summary.filter(pl.col("probe").is_in(list(classifiers)) & (pl.col("target") == "label"))
    rows = rows if rows.height else summary.sort("score", descending=True, nulls_last=True)
    if not rows.height:
        return f"{model} on {dataset}: no probe scores."
    row = rows.row(0, named=True)
    what = "the emotion label" if row["target"] == "label" else f"the rating {row['target']}"
    metric = row["score_metric"] if row["score_metric"] != "r2" else "R\u00b2"
    site = "" if row["best_site"] in (None, RESIDUAL) else f", {row['best_site']}"
    sentence = (f"{model} on {dataset}: the {row['probe']} probe reads {what} best at layer {row['best_layer']} of "
                f"{row['n_layers']} (position {row['best_position']}{site}), {metric} {row['score']:.3f} "
                f"[{row['score_ci_low']:.3f}, {row['score_ci_high']:.3f}]")
    if row["target"] == "label":
        sentence += f" (chance {row['chance']:.3f}, majority class {row['floor']:.3f})"
    if row["lexical"] is not None:
        sentence += (f", against {row['lexical']:.3f} [{row['lexical_ci_low']:.3f}, {row['lexical_ci_high']:.3f}] "
                     "for a lexical baseline on the words alone; ")
        sentence += ("no layer beats the words (no paired 95% CI of the difference lies above 0)"
                     if row["layers_beating_lexical"] == "none"
                     else f"layers {row['layers_beating_lexical']} beat them (paired 95% CI of the difference above 0)")
    if row.get("answer") is not None:
        sentence += (f"; the model's own answer is right for {row['answer']:.3f} "
                     f"[{row['answer_ci_low']:.3f}, {row['answer_ci_high']:.3f}]")
    return (sentence + f". Caveat: the best layer is the best of {row['candidates']} cross-validated cells, chosen "
            "on the folds that score it, so its score is optimistic; the CIs are 95% bootstrap intervals over texts.")


def _figure_list(figures: Sequence[Figure], out_dir: Path) -> str:
    """Each figure's PNG, linked to its interactive page, with its SVG and PDF (paper) files."""
    items = []
    for figure in figures:
        stem = figure.stem.relative_to(out_dir).as_posix()
        items.append(f'<figure><a href="{stem}.html"><img src="{stem}.png" width="640" alt="{html.escape(figure.title)}">'
                     f'</a><figcaption>{html.escape(figure.title)} (<a href="{stem}.html">interactive</a>, '
                     f'<a href="{stem}.svg">SVG</a>, <a href="{stem}.pdf">PDF</a>: {figure.width} width)'
                     "</figcaption></figure>")
    return "".join(items)


def _beats_the_words(summary: pl.DataFrame) -> str:
    """One sentence per probe and target: the layers whose paired 95% CI of the difference to the
    lexical baseline lies above 0 at the best position, or plainly that none does."""
    sentences = []
    for row in summary.filter(pl.col("layers_beating_lexical").is_not_null()).iter_rows(named=True):
        subject = f"{row['probe']} ({row['score_metric']}{'' if row['target'] == 'label' else ', ' + row['target']})"
        where = (f"at position {row['best_position']}, layers {row['layers_beating_lexical']} beat the lexical "
                 "baseline (paired 95% CI of the difference above 0)" if row["layers_beating_lexical"] != "none"
                 else f"no layer beats the lexical baseline at position {row['best_position']} (no paired 95% CI "
                      "of the difference lies above 0)")
        sentences.append(f"{subject}: {where}; best layer {row['best_layer']} minus lexical "
                         f"{row['best_minus_lexical']:+.3f} [{row['best_minus_lexical_ci_low']:+.3f}, "
                         f"{row['best_minus_lexical_ci_high']:+.3f}].")
    return "".join(f"<p><strong>Beats the words?</strong> {html.escape(s)}</p>" for s in sentences)


def _the_answer(answered: pl.DataFrame, counts: pl.DataFrame, metrics: pl.DataFrame) -> str:
    """The model's own answer in a sentence (accuracy with CI, how often its top-1 token is a label
    word, its three most frequent confusions) and a table of the texts per class."""
    score = select(metrics, ANSWER).row(0, named=True)
    top1 = select(metrics, ANSWER, TOP1_METRIC)["mean"][0]
    mistakes = (confusion(answered).filter(pl.col("label") != pl.col("answer"))
                .sort(["count", "label", "answer"], descending=[True, False, False]).head(3))
    confusions = ", ".join(f"{label} answered {answer} ({count})" for label, answer, count, _ in mistakes.iter_rows())
    sentence = (f"The model's own answer (argmax of the label words' first-token logits at the last prompt position) "
                f"is right for {score['mean']:.3f} [{score['ci_low']:.3f}, {score['ci_high']:.3f}] of the "
                f"{answered.height} texts; its unrestricted top-1 next token is a label word's for {top1:.3f}. "
                f"Most frequent confusions: {confusions or 'none'}.")
    columns = [column for column in ("label", "n_texts", "n_correct", "n_probed") if column in counts.columns]
    rows = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>"
                   for row in counts.select(columns).iter_rows())
    head = "".join(f"<th>{column}</th>" for column in columns)
    return (f"<p><strong>The model's answer.</strong> {html.escape(sentence)}</p>"
            f"<table><tr>{head}</tr>{rows}</table>")


def _cell(value) -> str:
    if value is None:
        return "<td></td>"
    return f"<td>{value:.3f}</td>" if isinstance(value, float) else f"<td>{html.escape(str(value))}</td>"


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _index_page(summary: pl.DataFrame, headlines: list[str], sections: list[tuple[str, str]], methods: str,
                tolerance: float) -> str:
    header = "".join(f"<th>{html.escape(c)}</th>" for c in summary.columns)
    body = "".join("<tr>" + "".join(map(_cell, row)) + "</tr>" for row in summary.iter_rows())
    contents = [("Findings", "findings"), *([("Methods", "methods")] if methods else []),
                *((title, _anchor(title)) for title, _ in sections), ("Summary table", "summary-table")]
    toc = "".join(f'<li><a href="#{anchor}">{html.escape(title)}</a></li>' for title, anchor in contents)
    findings = "".join(f"<p>{html.escape(sentence)}</p>" for sentence in headlines)
    parts = "".join(f'<h2 id="{_anchor(title)}">{html.escape(title)}</h2>{content}' for title, content in sections)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>emoprobe report</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}figure{{display:inline-block;margin:8px}}
figcaption{{font-size:smaller;max-width:640px}}</style></head><body>
<h1>Where is emotion linearly decodable?</h1>
<section id="findings">{findings}</section>
<nav><h2>Contents</h2><ol>{toc}</ol></nav>
{f'<section id="methods">{methods}</section>' if methods else ''}
{parts}
<h2 id="summary-table">Summary table</h2>
<p>Held-out scores of probes on each layer's residual stream (and, where configured, its attention
and MLP outputs) at the last prompt tokens,
one row per model, dataset and target. Classes (<code>target</code> = label): a standardised
multinomial logistic regression, stratified k-fold cross-validation with copies of a text in one
fold, scored by
<code>accuracy</code>; <code>floor</code> is the majority-class accuracy, <code>chance</code>
1 / number of classes. Numeric targets: standardisation + ridge (penalty chosen by inner
cross-validation over one row per text of the training folds), k-fold cross-validation grouped by
text, scored by <code>r2</code>;
<code>floor</code> is the R&sup2; of predicting the training folds' mean (about 0).
<code>best_layer</code>/<code>best_site</code>/<code>best_position</code> maximise the score over
the configured sites (<code>residual</code>: the residual stream; <code>attn_out</code>,
<code>mlp_out</code>: what a block's attention and MLP sub-blocks add to it; ties: the earlier
layer, then the position nearest the end). The charts below show the residual stream, and each
site where more are probed. That <code>score</code> is the best of
<code>candidates</code> cross-validated means, selected on the same folds that score it, so it
is optimistic: it is not a held-out estimate of the best layer's accuracy.
<code>first_layer_within_tolerance</code>: first layer whose score, at the best site and position, is
within {tolerance} of the best. <code>shuffled</code>: the same probe fitted on labels permuted
within the training folds, at the best layer and position (it should not exceed the floor).
<code>selectivity</code> (with a control task): accuracy minus the control task's accuracy there,
with its paired bootstrap 95% CI.
<code>lexical</code>: TF-IDF word and character n-grams of the text alone, on the same folds,
with its 95% CI; <code>best_minus_lexical</code>: the best score minus it, with a paired
bootstrap 95% CI on the same held-out rows; <code>layers_beating_lexical</code>: the layers whose
paired CI lies above 0 at the best position. Full tables: <code>results/metrics/probe_metrics.csv</code>,
<code>results/metrics/vs_lexical.csv</code>.</p>
<table><tr>{header}</tr>{body}</table>
</body></html>
"""
