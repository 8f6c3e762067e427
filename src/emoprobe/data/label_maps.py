"""Label maps: each dataset's labels renamed into a vocabulary shared across datasets (config
`datasets.<name>.label_map`), for cross-dataset transfer. A label mapped to null is left out of
transfer; a label the map does not name keeps its own name. `label_map: ekman` picks the map
shipped for the dataset's type below (to Ekman's six basic emotions and neutral, where a label
clearly is one)."""

from __future__ import annotations

from ..errors import ConfigError

EKMAN = {
    "crowd_envent": {"anger": "anger", "disgust": "disgust", "fear": "fear", "joy": "joy", "sadness": "sadness",
                     "surprise": "surprise", "neutral": "neutral", "boredom": None, "guilt": None, "pride": None,
                     "relief": None, "shame": None, "trust": None},
    "isear": {"joy": "joy", "fear": "fear", "anger": "anger", "sadness": "sadness", "disgust": "disgust",
              "shame": None, "guilt": None},
    "goemotions": {label: label for label in ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")},
    "empathetic_dialogues": {"afraid": "fear", "terrified": "fear", "angry": "anger", "furious": "anger",
                             "disgusted": "disgust", "joyful": "joy", "sad": "sadness", "devastated": "sadness",
                             "surprised": "surprise"},
}


def known_labels(spec: dict) -> tuple[str, ...] | None:
    """A dataset type's fixed labels, known before its data is read (None for custom and huggingface)."""
    from . import crowd_envent, empathetic_dialogues, goemotions, isear

    if spec["type"] == "goemotions":
        return {"ekman": goemotions.EKMAN_LABELS, "single_label": goemotions.EMOTIONS}.get(spec["labels"])
    return {"crowd_envent": crowd_envent.LABELS, "isear": isear.LABELS,
            "empathetic_dialogues": empathetic_dialogues.LABELS}.get(spec["type"])


def resolve_label_map(name: str, spec: dict) -> dict[str, str | None] | None:
    """The dataset's label map ({label: shared name or None}), None when it has none; `ekman`
    resolved; a map naming a label the dataset type does not have is refused, naming it."""
    label_map = spec.get("label_map")
    if isinstance(label_map, dict):
        if (labels := known_labels(spec)) is not None and (unknown := sorted(set(label_map) - set(labels))):
            raise ConfigError(f"config key 'datasets.{name}.label_map' names {unknown}, which are not labels of "
                              f"this {spec['type']} dataset ({list(labels)}); fix the names.")
        return label_map
    if label_map is None:
        return None
    if spec["type"] not in EKMAN or (spec["type"] == "goemotions" and spec.get("labels") != "ekman"):
        raise ConfigError(f"config key 'datasets.{name}.label_map': no ekman map ships for this {spec['type']} dataset "
                          f"(there are maps for {sorted(EKMAN)}; goemotions with `labels: ekman`); give the map "
                          "as {label: shared name or null}.")
    return EKMAN[spec["type"]]


def apply_label_map(labels: list[str], label_map: dict[str, str | None] | None, vocabulary: list[str],
                    source: str) -> list[str | None]:
    """Each label's shared name (None: left out). A map key outside `vocabulary` (the dataset's
    labels: known_labels, else those of its texts) is an error naming it."""
    if label_map is None:
        return list(labels)
    if unknown := sorted(set(label_map) - set(vocabulary)):
        raise ConfigError(f"the label map of {source} names {unknown}, which are not among its labels "
                          f"{sorted(set(vocabulary))}; fix the names in `label_map`.")
    return [label_map.get(label, label) for label in labels]
