"""Configuration: schema validation with defaults, and the per-job slices of it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError

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
        return yaml.safe_load(handle)


def _set_defaults(validator_class):
    """A validator that also fills in each property's `default` (as snakemake.utils.validate)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _set_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
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


def _describe(error: jsonschema.ValidationError) -> str | None:
    """A message naming the key, or None for an error that a more specific one already covers."""
    key = _key_path(error)
    if error.validator == "unevaluatedProperties":
        allowed = _allowed_keys(error)
        unexpected = sorted(set(error.instance) - allowed)
        if not unexpected:
            return None
        kind = f" to type {error.instance['type']!r}" if isinstance(error.instance.get("type"), str) else " here"
        return (f"config key '{key}': {', '.join(map(repr, unexpected))} "
                f"{'does' if len(unexpected) == 1 else 'do'} not apply{kind}. Allowed keys: "
                f"{', '.join(sorted(allowed))}.")
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        hint = f" Allowed keys here: {', '.join(allowed)}." if allowed else ""
        return f"config key '{key}': {error.message}.{hint}"
    if error.validator == "maximum" and error.schema.get("maximum") == -1:
        return (f"config key '{key}': position {error.instance} is not allowed; positions count "
                "from the end of the prompt and must be negative (-1 is the last token).")
    if error.validator == "uniqueItems":
        return f"config key '{key}': {error.instance} has duplicated entries; list each once."
    if error.validator == "minProperties":
        return f"config key '{key}': is empty; name at least one entry."
    if error.validator == "oneOf":
        return f"config key '{key}': {error.instance!r} is not valid: {error.schema.get('description', '').strip()}"
    return f"config key '{key}': {error.message}"


def validate_config(config: dict) -> dict:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError."""
    config = copy.deepcopy(dict(config))
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    messages = [message for message in map(_describe, errors) if message]
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(messages or map(str, errors)))
    resolve_template(config["prompt"]["template"])
    for name, spec in config["models"].items():
        _check_model_spec(name, spec)
    for name, spec in config["datasets"].items():
        _check_dataset_spec(name, spec)
    return config


def _check_model_spec(name: str, spec: dict) -> None:
    source = spec["source"]
    ok = {
        "hub": "id" in spec,
        "local": "path" in spec,
        "gguf": "path" in spec or ("file" in spec and ("package" in spec or "id" in spec)),
    }[source]
    if not ok:
        raise ConfigError(f"config key 'models.{name}': source '{source}' needs more: {_MODEL_SOURCE_KEYS[source]}.")


def _check_dataset_spec(name: str, spec: dict) -> None:
    """The loader's own option checks, up front: a dataset must have something to probe."""
    from .data.prepare import probe_plan
    from .errors import DataError

    try:
        plan = probe_plan(spec)
    except DataError as exc:
        raise ConfigError(f"config key 'datasets.{name}': {exc}") from None
    if not plan["classification"] and not plan["targets"]:
        raise ConfigError(f"config key 'datasets.{name}': nothing to probe: this {spec['type']} dataset has "
                          "neither class labels nor regression targets (custom: set `label_column` and/or "
                          "`target_columns`).")
    if spec.get("max_per_class") and not plan["classification"]:
        raise ConfigError(f"config key 'datasets.{name}': max_per_class needs class labels, and this "
                          f"{spec['type']} dataset has none; remove max_per_class.")


def resolve_template(template: str) -> str:
    """A template name or literal -> the literal template string (must contain {text})."""
    literal = PROMPT_TEMPLATES.get(template, template)
    if "{text}" not in literal:
        raise ConfigError(
            f"config key 'prompt.template': {template!r} is neither a named template "
            f"({', '.join(PROMPT_TEMPLATES)}) nor a string containing {{text}}."
        )
    try:
        literal.format(text="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"config key 'prompt.template': {template!r} has a placeholder other than {{text}} "
            f"({exc}); write literal braces as {{{{ and }}}}."
        ) from exc
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
