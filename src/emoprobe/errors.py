"""Exceptions with messages meant for the researcher running the workflow."""


class EmoprobeError(Exception):
    """Base class: the message names the bad value and the fix."""


class ConfigError(EmoprobeError):
    """The configuration is invalid."""


class DataError(EmoprobeError):
    """A raw or prepared dataset is missing, corrupt or unusable."""


class ModelLoadError(EmoprobeError):
    """A model or tokenizer could not be loaded."""


class ExtractionError(EmoprobeError):
    """Activations could not be extracted for some input."""


class ShardError(EmoprobeError):
    """An activation shard is missing, corrupt or does not match its inputs."""
