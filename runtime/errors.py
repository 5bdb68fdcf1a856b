"""One documented exception hierarchy for the whole runtime.

Every error a user can meet derives from :class:`KioskError`. Its ``str()`` is
meant to be shown as is: it says what went wrong and, through ``hint``, what to
do about it. Code that catches errors catches the narrowest class it can
handle; the CLI catches ``KioskError`` once, prints it and exits non-zero.

Hierarchy (one section per subsystem; add new classes to the matching section)::

    KioskError
    ├── ConfigError                 config file or environment override is wrong
    ├── ModelError                  anything about model files and backends
    │   ├── ModelManifestError      a manifest in models/ is malformed
    │   ├── ModelSourceError        a source (PyPI package, path, hub) cannot be fetched
    │   ├── ModelChecksumError      a file's size or sha256 does not match its manifest
    │   ├── ModelNotPreparedError   `kiosk models prepare` has not produced this model yet
    │   ├── BackendUnavailableError a library (onnxruntime, openvino, ...) is not installed
    │   ├── DeviceError             unknown device name, or no device could run the model
    │   └── InferenceError          a loaded model failed while running
    ├── KnowledgeError              knowledge store, ingestion, retrieval
    ├── PackError                   knowledge packs: format, signature, install, sync
    ├── AudioError                  audio input that cannot be decoded or breaks limits
    └── AnswerError                 the answer pipeline
"""

from __future__ import annotations


class KioskError(Exception):
    """Base class: a message for the user plus an optional hint on how to fix it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


# --- configuration -----------------------------------------------------------------


class ConfigError(KioskError):
    """The config file or an environment override is invalid."""


# --- models ------------------------------------------------------------------------


class ModelError(KioskError):
    """Base for model file and backend problems."""


class ModelManifestError(ModelError):
    """A model manifest under models/ is malformed."""


class ModelSourceError(ModelError):
    """A model source (PyPI package, local path, hub id) could not be fetched."""


class ModelChecksumError(ModelError):
    """A model file's size or sha256 differs from the manifest (corrupt or truncated)."""


class ModelNotPreparedError(ModelError):
    """The model has not been prepared into the model cache yet."""


class BackendUnavailableError(ModelError):
    """The Python package for an inference backend is not installed."""


class DeviceError(ModelError):
    """An unknown device name, or no device could load and run the model."""


class InferenceError(ModelError):
    """A loaded model failed while running (bad output, crash, timeout)."""


# --- knowledge ---------------------------------------------------------------------


class KnowledgeError(KioskError):
    """Base for knowledge store, ingestion and retrieval problems."""


# --- packs -------------------------------------------------------------------------


class PackError(KioskError):
    """Base for knowledge pack problems."""


# --- audio -------------------------------------------------------------------------


class AudioError(KioskError):
    """Audio input that cannot be decoded or breaks the configured limits."""


# --- answers -----------------------------------------------------------------------


class AnswerError(KioskError):
    """Base for answer pipeline problems."""
