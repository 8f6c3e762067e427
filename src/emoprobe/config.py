"""Configuration: schema validation with defaults, and the per-job slices of it."""

from __future__ import annotations

import copy
import string
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from snakemake.utils import validate

from .errors import ConfigError, DataError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

PROMPT_TEMPLATES = {
    # The course notebook's zero-shot prompt (design.md).
    "zero_shot": "What are the inferred emotions in the following contexts? Context: {text} Answer:",
    # Tak et al. 2025's default "joy_sadness_0" 2-shot prompt.
    "two_shot": (
        "What are the inferred emotions in the following contexts? "
        "Context: My first child was born. Answer: joy "
        "Context: My dog died last week. Answer: sadness "
        "Context: {text} Answer:"
    ),
}

_MODEL_SOURCE_KEYS = {
    "hub": "set `id` (e.g. HuggingFaceTB/SmolLM2-135M-Instruct)",
    "local": "set `path` to a directory holding config.json and safetensors weights",
    "gguf": "set `path` to a .gguf file, or `package` + `file`, or `id` + `file`",
}


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml's: 10x faster


def _key_path(error: jsonschema.ValidationError, prefix: str) -> str:
    parts = [prefix] * bool(prefix) + [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _allowed_keys(error: jsonschema.ValidationError) -> set[str]:
    """Keys an `unevaluatedProperties: false` object may have: its own `properties` and those of
    the `then` branch of each `if` it matches (e.g. the options of a dataset's type).

    A key that a failing `then` branch defines is reported by jsonschema as unevaluated too;
    it counts as allowed here, since the branch's own, more specific error names it.
    """
    allowed = set(error.schema.get("properties", {}))
    for branch in error.schema.get("allOf", []):
        if "if" in branch and jsonschema.Draft202012Validator(branch["if"]).is_valid(error.instance):
            allowed |= set(branch.get("then", {}).get("properties", {}))
    return allowed


def _describe(error: jsonschema.ValidationError, prefix: str = "") -> str | None:
    """A message naming the key (under `prefix`), or None for an error that a more specific one covers."""
    key = _key_path(error, prefix)
    if error.validator == "unevaluatedProperties":
        allowed = _allowed_keys(error)
        unexpected = sorted(set(error.instance) - allowed)
        if not unexpected:
            return None
        selector = next((k for k in ("type", "source") if isinstance(error.instance.get(k), str)), None)
        kind = f" to {selector} {error.instance[selector]!r}" if selector else " here"
        return (f"config key '{key}': {', '.join(map(repr, unexpected))} "
                f"{'does' if len(unexpected) == 1 else 'do'} not apply{kind}. Allowed keys: "
                f"{', '.join(sorted(allowed))}.")
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        hint = f" Allowed keys here: {', '.join(allowed)}." if allowed else ""
        return f"config key '{key}': {error.message}.{hint}"
    if error.validator == "uniqueItems":
        return f"config key '{key}': {error.instance} has duplicated entries; list each once."
    if error.validator == "minProperties":
        return f"config key '{key}': is empty; name at least one entry."
    if error.validator in ("oneOf", "anyOf"):
        return f"config key '{key}': {error.instance!r} is not valid: {error.schema.get('description', '').strip()}"
    if error.validator == "const" and "description" in error.schema:
        return f"config key '{key}': {error.schema['description'].strip()}"
    return f"config key '{key}': {error.message}"


def check_schema(instance: Any, schema: dict, prefix: str = "") -> None:
    """Raise ConfigError listing every way `instance` breaks `schema`, each naming its key (under `prefix`)."""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance),
                    key=lambda e: list(map(str, e.absolute_path)))
    messages = [message for message in (_describe(error, prefix) for error in errors) if message]
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(messages or map(str, errors)))


def fill_defaults(config: dict) -> None:
    """Fill in the schema's defaults, those of allOf/then branches included (snakemake's validate;
    `config` must be a whole, valid config: that validate takes only the schema's file)."""
    validate(config, str(SCHEMA_PATH), set_default=True)


_MOVED_PROBE_KEYS = ("backend", "C", "max_iter")  # probe.<key> until the `probes` list


def validate_config(config: dict) -> dict:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError."""
    config = copy.deepcopy(dict(config))
    if moved := [key for key in _MOVED_PROBE_KEYS if key in (config.get("probe") or {})]:
        settings = ", ".join(f"{key}: {config['probe'][key]}" for key in moved)
        raise ConfigError(f"config keys {', '.join('probe.' + key for key in moved)} moved into the `probes` list "
                          f"(one entry per probe); remove them from `probe:` and write instead:\n"
                          f"probes:\n  - {{name: logreg, kind: logreg, {settings}}}")
    check_schema(config, load_schema())
    fill_defaults(config)
    config["probes"] = _check_probes(config["probes"])
    resolve_template(config["prompt"]["template"])
    for name, spec in config["models"].items():
        _check_model_spec(name, spec)
    for name, spec in config["datasets"].items():
        _check_dataset_spec(name, spec)
        if spec["official_split"] and config["probe"]["split"] == "holdout":
            raise ConfigError(f"config key 'datasets.{name}.official_split': the dataset's own split and "
                              "`probe.split: holdout` both say how to split its rows; keep one.")
    return config


def _check_model_spec(name: str, spec: dict) -> None:
    """What the per-source schema cannot say: which keys together tell where the model is."""
    source = spec["source"]
    ok = {
        "hub": "id" in spec,
        "local": "path" in spec,
        "gguf": "path" in spec or ("file" in spec and ("package" in spec or "id" in spec)),
    }[source]
    if not ok:
        raise ConfigError(f"config key 'models.{name}': source '{source}' needs more: {_MODEL_SOURCE_KEYS[source]}.")
    if source != "gguf":
        return
    where = [f"`{key}`" for key in ("id", "package", "path") if key in spec]
    if len(where) > 1:
        raise ConfigError(f"config key 'models.{name}': {' and '.join(where)} both say where the GGUF file is; keep "
                          f"one: {_MODEL_SOURCE_KEYS['gguf'].removeprefix('set ')}.")
    if "path" in spec and "file" in spec:
        raise ConfigError(f"config key 'models.{name}': `file` does not apply with `path`, which names the .gguf "
                          "file itself; remove `file`.")
    if spec["revision"] is not None and "id" not in spec:
        raise ConfigError(f"config key 'models.{name}': `revision` applies only with `id` (a Hub repository); "
                          "remove `revision`.")


def _check_probes(entries: list[dict]) -> list[dict]:
    """Unique, unreserved probe names; each entry with its kind's defaults."""
    from .registry import RESERVED, with_defaults

    names = [entry["name"] for entry in entries]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ConfigError(f"config key 'probes': the name(s) {repeated} appear more than once; give each entry its "
                          "own name (it is the probe's value in the metrics table and its output paths).")
    if reserved := [name for name in names if name in RESERVED]:
        raise ConfigError(f"config key 'probes': the name(s) {reserved} are the workflow's own baselines "
                          f"({', '.join(RESERVED)}); rename the entry.")
    return [with_defaults(entry) for entry in entries]


_WEIGHTS_KEYS = ("random_init", "init_seed", "quantisation")  # what a random-init twin may change


def random_init_twins(models: dict[str, dict]) -> dict[str, list[str]]:
    """{pretrained model: its random-init twins}: the random_init entries whose spec equals the
    pretrained entry's but for random_init, init_seed and quantisation."""
    def where(spec):
        return sorted((key, str(value)) for key, value in spec.items() if key not in _WEIGHTS_KEYS)

    pretrained = {tuple(where(spec)): name for name, spec in sorted(models.items()) if not spec.get("random_init")}
    twins: dict[str, list[str]] = {}
    for name, spec in sorted(models.items()):
        if spec.get("random_init") and (base := pretrained.get(tuple(where(spec)))):
            twins.setdefault(base, []).append(name)
    return twins


def _check_dataset_spec(name: str, spec: dict) -> None:
    """The loader's own option checks, up front: a dataset must have something to probe, and a custom
    dataset's file must exist."""
    from .data.prepare import probe_plan

    try:
        plan = probe_plan(spec)
    except DataError as exc:
        raise ConfigError(f"config key 'datasets.{name}': {exc}") from None
    if not plan["classification"] and not plan["targets"]:
        raise ConfigError(f"config key 'datasets.{name}': nothing to probe: this {spec['type']} dataset has "
                          "neither class labels nor regression targets (custom: set `label_column` and/or "
                          "`target_columns`; with `format: lines`, `labels_path`).")
    if spec["type"] == "huggingface":
        if (spec["id"] is None) == (spec["path"] is None):
            raise ConfigError(f"config key 'datasets.{name}': a huggingface dataset is read from the Hub (`id`) or "
                              "from a local copy (`path`): set exactly one of them.")
        if spec["path"] is not None and not Path(spec["path"]).exists():
            raise ConfigError(f"config key 'datasets.{name}.path': {spec['path']!r} does not exist (a relative path "
                              f"starts at the working directory, {Path.cwd()}); fix the path.")
    if spec["type"] != "custom":
        return
    lines = spec["format"] == "lines"
    for key in ("path", "labels_path", "label_names_path"):
        if key != "path" and spec[key] is not None and not lines:
            raise ConfigError(f"config key 'datasets.{name}.{key}' is for parallel line files: set `format: lines`, "
                              "or drop it.")
        if spec[key] is not None and not Path(spec[key]).is_file():
            raise ConfigError(f"config key 'datasets.{name}.{key}': {spec[key]!r} does not exist (a relative path "
                              f"starts at the working directory, {Path.cwd()}); fix the path or create the file.")
    if lines and spec["label_names_path"] is not None and spec["labels_path"] is None:
        raise ConfigError(f"config key 'datasets.{name}.label_names_path' names the ids of `labels_path`, which is "
                          "not set: set `labels_path` to the file of label ids.")
    if lines and (spec["label_column"] is not None or spec["target_columns"]):
        raise ConfigError(f"config key 'datasets.{name}': `format: lines` reads texts from `path` and labels from "
                          "`labels_path`; drop `label_column` and `target_columns`.")


def resolve_template(template: str) -> str:
    """A template name or literal -> the literal template string, whose one placeholder is {text}."""
    literal = PROMPT_TEMPLATES.get(template, template)
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(literal)
                  if name is not None]
    except ValueError as exc:
        raise ConfigError(f"config key 'prompt.template': {template!r} is not a valid template ({exc}); write "
                          "literal braces as {{ and }}.") from None
    if fields != [("text", "", None)]:
        found = ", ".join("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                          for name, spec, conversion in fields) or "none"
        raise ConfigError(
            f"config key 'prompt.template': {template!r} must be a named template ({', '.join(PROMPT_TEMPLATES)}) "
            f"or a string with exactly one placeholder, {{text}} (no format spec or conversion), and no other; "
            f"it has {found}. Write literal braces as {{{{ and }}}}."
        )
    return literal


def resolve_layers(requested: Any, n_layers: int, model: str) -> list[int]:
    """Config `layers` -> sorted layer indices for a model with `n_layers` blocks."""
    if requested == "all":
        return list(range(n_layers + 1))
    bad = [layer for layer in requested if layer > n_layers]
    if bad:
        raise ConfigError(
            f"config key 'layers': {bad} out of range for model '{model}', which has layers "
            f"0..{n_layers} (0 is the embedding output)."
        )
    return sorted(requested)
