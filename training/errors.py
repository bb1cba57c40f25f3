"""Exceptions of the training layer: every error raised by ``training`` derives from :class:`TrainingError`."""


class TrainingError(Exception):
    """Root of all training-layer errors."""
