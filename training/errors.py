"""Exceptions of the training layer: every error raised by ``training`` derives from ``TrainingError``."""


class TrainingError(Exception):
    """Root of all training-layer errors."""


class ConfigError(TrainingError, ValueError):
    """A training configuration value is out of range or of the wrong kind."""


class DataFormatError(TrainingError, ValueError):
    """A data file or row is malformed; the message names the file and line."""


class ModelLoadError(TrainingError, OSError):
    """A base model or tokenizer cannot be found, converted or loaded."""


class AdapterStateError(TrainingError, ValueError):
    """An adapter state does not match the model's trainable tensors (names, shapes or values)."""
