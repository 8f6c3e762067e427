"""The report's charts of the causal experiments and one paragraph reading each, generated from the
causal table (jobs.causal_experiment): per model x dataset, what each experiment that ran shows."""

from __future__ import annotations

import html

import altair as alt
import polars as pl

from ..figures import categorical
from ..shards import SITES
from .plan import ABLATION_KINDS

BAND = "band: 95% bootstrap CI over the sampled texts"


def _title(text: str, subtitle: list[str], note: str) -> dict:
    return {"text": text, "subtitle": [*subtitle, *([note] if note else [])]}


def _interval(row: dict, signed: bool = True) -> str:
    form = "+.3f" if signed else ".3f"
    return f"{row['value']:{form}} [{row['ci_low']:{form}}, {row['ci_high']:{form}}]"


def _heatmap(data: pl.DataFrame, x: str, y: alt.Y, colour: str, title: dict, tooltip: list, **scale) -> alt.Chart:
    return alt.Chart(data).mark_rect().encode(
        x=alt.X(x), y=y, color=alt.Color("value:Q", title=colour, scale=alt.Scale(**scale)),
        tooltip=[*tooltip, alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
                 alt.Tooltip("ci_high:Q", format=".3f")]).properties(title=title, width=520, height=90)


def _lines(data: pl.DataFrame, y_title: str, colour: alt.Color, dash: alt.StrokeDash, tooltip: list,
           x_title: str = "centre layer of the edited span") -> alt.LayerChart:
    """value by layer with its CI band, zero marked."""
    base = alt.Chart(data).encode(x=alt.X("layer:Q", title=x_title), color=colour, strokeDash=dash)
    band = base.mark_area(opacity=0.1).encode(y="ci_low:Q", y2="ci_high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("value:Q", title=y_title),
        tooltip=[*tooltip, "span", alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
                 alt.Tooltip("ci_high:Q", format=".3f")])
    return alt.layer(band, line, alt.Chart().mark_rule(color="gray").encode(y=alt.datum(0)))


def ablation_by_layer(causal: pl.DataFrame, model: str, dataset: str, note: str) -> alt.LayerChart:
    """Ablation's effect on the model's answer by centre layer: the change in accuracy (edited minus
    clean, with its paired 95% bootstrap CI as a band), one line per site (colour) and kind (dash)."""
    data = causal.filter(experiment="ablation", model=model, dataset=dataset, metric="accuracy_change")
    first = data.row(0, named=True)
    chart = _lines(data, "accuracy after ablation - clean accuracy", categorical("site", SITES),
                   alt.StrokeDash("kind:N", sort=list(ABLATION_KINDS)), ["site", "kind"])
    return chart.properties(title=_title(
        f"{model} on {dataset}: ablation at the last prompt position",
        [f"{first['n_texts']} texts (clean accuracy {first['clean_accuracy']:.3f}); each point ablates the span of "
         "layers centred on it;", "band: paired 95% bootstrap CI"], note), width=520, height=300)


def _ablation_reading(causal: pl.DataFrame, model: str, dataset: str) -> str:
    """Where ablation hurts the answer most, with numbers."""
    data = causal.filter(experiment="ablation", model=model, dataset=dataset, metric="accuracy_change").sort("value")
    worst = data.row(0, named=True)
    by_site = data.group_by("site").agg(pl.col("value").min()).sort("value")
    hurt = data.filter(pl.col("ci_high") < 0)
    return (f"Ablation (clean accuracy {worst['clean_accuracy']:.3f} on {worst['n_texts']} texts) hurts the answer "
            f"most when the {worst['site']} of layers {worst['span']} is set to {worst['kind']}: accuracy changes by "
            f"{_interval(worst)}. The largest drop per site: "
            + ", ".join(f"{site} {value:+.3f}" for site, value in by_site.iter_rows())
            + f". {hurt.height} of {data.height} ablations lower the accuracy with a paired 95% CI below 0.")


def patching_by_layer(causal: pl.DataFrame, model: str, dataset: str, note: str) -> alt.Chart:
    """Activation patching as a site x layer heatmap: the normalised logit difference (0: the
    target's clean gap between the two labels, 1: the source's), the flip-to-source rate in the tooltip."""
    data = causal.filter(experiment="patching", model=model, dataset=dataset)
    cells = (data.filter(metric="normalised_logit_difference")
             .join(data.filter(metric="flip_to_source").select("layer", "site", pl.col("value").alias("flip_to_source")),
                   on=["layer", "site"]))
    first = cells.row(0, named=True)
    return _heatmap(cells, "layer:O", alt.Y("site:N", sort=list(SITES)), "normalised logit difference", _title(
        f"{model} on {dataset}: activation patching, site x centre layer",
        [f"{first['n_texts']} pairs of texts with different labels; each cell writes the source's activation into "
         "the target", "at the last position over the span of layers centred on it; 0: the target's clean logit gap, "
         "1: the source's"], note), ["layer", "site", "span", alt.Tooltip("flip_to_source:Q", format=".3f")],
        scheme="viridis")


def _patching_reading(causal: pl.DataFrame, model: str, dataset: str) -> str:
    """Where patching moves the target's answer most, with numbers."""
    data = causal.filter(experiment="patching", model=model, dataset=dataset)
    best = data.filter(metric="normalised_logit_difference").sort("value", descending=True).row(0, named=True)
    flips = data.filter(metric="flip_to_source").sort("value", descending=True).row(0, named=True)
    return (f"Activation patching ({best['n_texts']} pairs) moves the target's answer furthest towards the "
            f"source's emotion when the {best['site']} of layers {best['span']} is patched: normalised logit "
            f"difference {_interval(best, False)}; the highest flip-to-source rate is {_interval(flips, False)} "
            f"({flips['site']}, layers {flips['span']}).")


def heads_heatmap(causal: pl.DataFrame, model: str, dataset: str, note: str) -> alt.Chart:
    """Head knockout as a head x layer heatmap of the change in answer accuracy."""
    data = causal.filter(experiment="heads", model=model, dataset=dataset, metric="accuracy_change")
    first = data.row(0, named=True)
    chart = _heatmap(data, "layer:O", alt.Y("head:O"), "accuracy change", _title(
        f"{model} on {dataset}: attention-head knockout, head x layer",
        [f"{first['n_texts']} texts (clean accuracy {first['clean_accuracy']:.3f}); each cell zeroes one head's "
         "output at the last prompt position;", "colour: accuracy after - clean accuracy"], note),
        ["layer", "head"], scheme="redblue", domainMid=0)
    return chart.properties(height=max(90, 14 * data["head"].n_unique()))


def _heads_reading(causal: pl.DataFrame, model: str, dataset: str) -> str:
    """The heads whose knockout hurts the answer most, with numbers."""
    data = causal.filter(experiment="heads", model=model, dataset=dataset, metric="accuracy_change").sort("value")
    hurt = data.filter(pl.col("ci_high") < 0)
    return ("Knocking out one attention head at a time, the heads that matter most are "
            + "; ".join(f"layer {row['layer']} head {row['head']} ({_interval(row)})"
                        for row in data.head(5).iter_rows(named=True))
            + f". {hurt.height} of {data.height} heads lower the accuracy with a paired 95% CI below 0.")


def promotion_by_layer(causal: pl.DataFrame, model: str, dataset: str, note: str) -> alt.LayerChart:
    """Emotion promotion's success rate over all promoted emotions by centre layer, one line per
    alpha (colour), the random-direction control dashed."""
    data = causal.filter(experiment="promotion", model=model, dataset=dataset, metric="promotion_rate", emotion="all")
    first = data.row(0, named=True)
    chart = _lines(data.with_columns(pl.col("alpha").cast(pl.String)), "share of answers that become the emotion",
                   alt.Color("alpha:N", title="alpha (x median residual norm)"),
                   alt.StrokeDash("kind:N", sort=["probe", "random"]), ["alpha", "kind"])
    return chart.properties(title=_title(
        f"{model} on {dataset}: emotion promotion in the residual stream",
        [f"{first['n_texts']} texts; alpha x the layer's median residual norm along the probe's unit direction of",
         "each emotion (dashed: a random direction), added at the last position over the span centred on each layer;",
         f"share of the texts not already answering that emotion, over all emotions; {BAND}"], note),
        width=520, height=300)


def _promotion_reading(causal: pl.DataFrame, model: str, dataset: str) -> str:
    """Where promotion works best against its random control, with numbers."""
    data = causal.filter(experiment="promotion", model=model, dataset=dataset, metric="promotion_rate", emotion="all")
    best = data.filter(kind="probe").sort("value", descending=True).row(0, named=True)
    control = data.filter(kind="random", layer=best["layer"], alpha=best["alpha"]).row(0, named=True)
    per_emotion = (causal.filter(experiment="promotion", model=model, dataset=dataset, metric="promotion_rate",
                                 kind="probe", layer=best["layer"], alpha=best["alpha"])
                   .filter(pl.col("emotion") != "all").sort("value", descending=True))
    return (f"Adding an emotion's probe direction ({best['n_texts']} texts) makes the answer that emotion most often "
            f"at layers {best['span']} with alpha {best['alpha']}: {_interval(best, False)} of the answers, against "
            f"{_interval(control, False)} for a random direction of the same norm. There, by emotion: "
            + ", ".join(f"{emotion} {value:.3f}" for emotion, value in per_emotion.select("emotion", "value").iter_rows())
            + ".")


def steering_by_layer(causal: pl.DataFrame, model: str, dataset: str, note: str) -> alt.LayerChart:
    """Appraisal steering's agreement with the human data by centre layer: one line per appraisal
    (steered up), the random direction's agreement, averaged over appraisals, dashed."""
    data = causal.filter(experiment="steering", model=model, dataset=dataset, metric="agreement", direction="up")
    random = (data.filter(kind="random").group_by("layer", "span")
              .agg(pl.col("value", "ci_low", "ci_high").mean()).with_columns(appraisal=pl.lit("random (mean)"),
                                                                              kind=pl.lit("random")))
    steered = data.filter(pl.col("kind") != "random")
    first = steered.row(0, named=True)
    chart = _lines(pl.concat([steered.select(random.columns), random], how="vertical_relaxed"),
                   "Spearman r, observed vs expected change", alt.Color("appraisal:N"),
                   alt.StrokeDash("kind:N", sort=[first["kind"], "random"]), ["appraisal", "kind"])
    return chart.properties(title=_title(
        f"{model} on {dataset}: appraisal steering against the human data",
        [f"{first['n_texts']} texts; each point adds {first['alpha']} x the layer's median residual norm along an "
         f"appraisal's ridge direction ({first['kind']})",
         "over the span centred on it; rank correlation over emotions between the change of each emotion's",
         "log-probability and the change a logistic regression of the human labels on the human ratings expects;",
         BAND], note), width=520, height=300)


def steering_heatmap(causal: pl.DataFrame, model: str, dataset: str, note: str) -> alt.HConcatChart:
    """At the layer where steering agrees best with the human data: the observed appraisal x emotion
    changes of log-probability (steered up) beside the expected ones."""
    data = causal.filter(experiment="steering", model=model, dataset=dataset)
    layer = _best_steering_layer(data)
    observed = data.filter(metric="logprob_change", layer=layer, direction="up").filter(pl.col("kind") != "random")
    expected = data.filter(metric="expected_change").with_columns(ci_low=pl.col("value"), ci_high=pl.col("value"))
    panels = [_heatmap(frame, "emotion:N", alt.Y("appraisal:N"), colour, {"text": text}, ["appraisal", "emotion"],
                       scheme="redblue", domainMid=0).properties(width=300, height=110)
              for frame, colour, text in ((observed, "observed", f"observed, layers {observed['span'][0]}"),
                                          (expected, "expected", "expected (human labels on ratings)"))]
    return alt.hconcat(*panels).resolve_scale(color="independent").properties(title=_title(
        f"{model} on {dataset}: change of each emotion's log-probability, appraisal steered up",
        [f"at the centre layer {layer}, where the mean agreement over appraisals and directions is highest"], note))


def _best_steering_layer(data: pl.DataFrame) -> int:
    agreement = data.filter(metric="agreement").filter(pl.col("kind") != "random")
    return agreement.group_by("layer").agg(pl.col("value").mean()).sort("value", descending=True)["layer"][0]


def _steering_reading(causal: pl.DataFrame, model: str, dataset: str) -> str:
    """Where steering agrees best with the human data, against its random control, with numbers."""
    data = causal.filter(experiment="steering", model=model, dataset=dataset)
    layer = _best_steering_layer(data)
    at = data.filter(metric="agreement", layer=layer)
    steered, random = at.filter(pl.col("kind") != "random"), at.filter(kind="random")
    best = data.filter(metric="agreement").filter(pl.col("kind") != "random").sort("value", descending=True).row(
        0, named=True)
    # A CI over texts says how stable an edit's agreement is, not whether it beats chance: a random
    # direction also moves every text alike. Chance is the random directions' spread of agreements.
    chance = data.filter(metric="agreement", kind="random")["value"].quantile(0.95, "linear")
    steered_all = data.filter(metric="agreement", kind=best["kind"])
    above = steered_all.filter(pl.col("value") > chance)
    by_appraisal = above.group_by("appraisal").len().sort("len", descending=True)
    return (f"Steering along an appraisal's direction ({best['n_texts']} texts) agrees best with the human data at "
            f"centre layer {layer}: mean Spearman r over appraisals and directions {steered['value'].mean():+.3f}, "
            f"random directions {random['value'].mean():+.3f}. The single best: {best['appraisal']} "
            f"{best['direction']} at layers {best['span']}, r = {_interval(best)} (CI over texts). A random direction "
            f"of the same norm reaches r = {chance:.3f} at its 95th percentile over layers and appraisals; "
            f"{above.height} of {steered_all.height} steered edits agree more than that"
            + (" (" + ", ".join(f"{name} {count}" for name, count in by_appraisal.iter_rows()) + ")."
               if above.height else "."))


CHARTS = {"ablation": (("ablation_by_layer", ablation_by_layer),), "patching": (("patching_by_layer", patching_by_layer),),
          "heads": (("heads_heatmap", heads_heatmap),), "promotion": (("promotion_by_layer", promotion_by_layer),),
          "steering": (("steering_by_layer", steering_by_layer), ("steering_heatmap", steering_heatmap))}
READINGS = {"ablation": _ablation_reading, "patching": _patching_reading, "heads": _heads_reading,
            "promotion": _promotion_reading, "steering": _steering_reading}


def causal_section(causal: pl.DataFrame | None, model: str, dataset: str, note: str) -> tuple[list, str]:
    """([(figure name, chart)], paragraphs as HTML) of every experiment that ran on model x dataset."""
    if causal is None:
        return [], ""
    ran = [experiment for experiment in CHARTS if experiment in set(causal.filter(model=model, dataset=dataset)["experiment"])]
    charts = [(name, draw(causal, model, dataset, note)) for experiment in ran for name, draw in CHARTS[experiment]]
    return charts, "".join(f"<p>{html.escape(READINGS[experiment](causal, model, dataset))}</p>" for experiment in ran)
