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
    │   ├── ModelRecipeError        a preparation recipe failed while building a variant
    │   ├── BackendUnavailableError a library (onnxruntime, openvino, ...) is not installed
    │   ├── DeviceError             unknown device name, or no device could run the model
    │   └── InferenceError          a loaded model failed while running
    │       └── WorkerError         the generator worker process (runtime/workers)
    │           ├── WorkerUnavailableError  starting, restarting or failed: not serving now
    │           ├── WorkerCrashedError      died mid-request (WorkerHungError: stopped answering)
    │           ├── WorkerProtocolError     garbage, oversize or malformed frames
    │           └── WorkerBusyError         another request held the worker too long
    ├── KnowledgeError              knowledge store, ingestion, retrieval
    │   ├── StoreOpenError          the store file cannot be opened
    │   ├── StoreCorruptError       not an SQLite database / integrity check failed
    │   ├── StoreMismatchError      built with another embedding model or dimension
    │   ├── StoreVersionError       schema newer than this runtime / read-only needs migration
    │   ├── VectorError             wrong dimension, NaN/inf or zero vectors
    │   ├── StoreReadOnlyError      write to a store opened read-only
    │   └── IngestError             one input file skipped (reason in the ingest report)
    │       ├── UnsupportedFormatError  extension/content not a readable format
    │       ├── DocumentLimitError      over a size/page/row/cell/time/memory limit
    │       └── DocumentParseError      corrupt, undecodable, empty or missing columns
    ├── PackError                   knowledge packs: format, signature, install, sync
    │   ├── PackFormatError         malformed pack/index/key list
    │   │                           (PackIntegrityError: bad section hash)
    │   ├── PackSignatureError      unsigned, untrusted key, bad or duplicated signature
    │   ├── PackVersionError        not above the highest version ever accepted
    │   ├── PackExpiredError        expired or future-dated under the clock policy
    │   ├── PackCompatibilityError  locale, runtime version or embedding model mismatch
    │   ├── PackInstallError        build/check/switch failed; the old pack stays active
    │   │   └── PackDiskError       disk full or I/O error while installing (nothing switched)
    │   ├── PackSourceError         HTTP channel or USB folder failed (deadline, cap, odd file)
    │   └── PackKeyError            signing key file missing, malformed or unsafe
    ├── AudioError                  audio input that cannot be decoded or breaks limits
    │   ├── AudioFormatError        not WAV/FLAC/PCM, truncated, or a self-contradicting header
    │   ├── AudioLimitError         breaks a [speech] limit
    │   │                           (bytes, seconds, channels, rate, input speed)
    │   └── AudioStreamError        a streaming session used wrongly
    ├── AnswerError                 the answer pipeline
    ├── ServerError                 HTTP service (status attribute: the HTTP status)
    │   ├── RequestRejectedError    bad Host/Origin/token, body or message over a cap,
    │   │                           malformed input
    │   └── RateLimitedError        too many requests or PIN lockout (retry_after_s)
    └── AuditError                  the audit log cannot be opened, written or exported
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


class ModelRecipeError(ModelError):
    """A preparation recipe failed; the variant it was building was not installed."""


class BackendUnavailableError(ModelError):
    """The Python package for an inference backend is not installed."""


class DeviceError(ModelError):
    """An unknown device name, or no device could load and run the model."""


class InferenceError(ModelError):
    """A loaded model failed while running (bad output, crash, timeout)."""


class WorkerError(InferenceError):
    """The generator's worker process failed; the supervisor restarts it."""


class WorkerUnavailableError(WorkerError):
    """The worker is starting, restarting or failed, so nothing is generated now."""


class WorkerCrashedError(WorkerError):
    """The worker process died (crash, SIGKILL, out of memory) while serving a request."""


class WorkerHungError(WorkerCrashedError):
    """The worker stopped answering pings or overran a request's time; it was killed."""


class WorkerProtocolError(WorkerError):
    """The worker sent an undecodable, oversize or malformed frame; it was killed."""


class WorkerBusyError(WorkerError):
    """Another request held the single-flight worker for the whole of this request's budget."""


# --- knowledge ---------------------------------------------------------------------


class KnowledgeError(KioskError):
    """Base for knowledge store, ingestion and retrieval problems."""


class StoreOpenError(KnowledgeError):
    """The knowledge store file cannot be opened (missing, unreadable, or SQLite lacks extension
    loading)."""


class StoreCorruptError(KnowledgeError):
    """The knowledge store file is not a valid SQLite database or fails its integrity check."""


class StoreMismatchError(KnowledgeError):
    """The store was built with another embedding model or dimension than the one asked for."""


class StoreVersionError(KnowledgeError):
    """The store's schema is newer than this runtime, or needs migrating but was opened
    read-only."""


class VectorError(KnowledgeError):
    """A vector given to the store has the wrong shape or dimension, or holds NaN/inf/zero rows."""


class StoreReadOnlyError(KnowledgeError):
    """A write was attempted on a store opened read-only."""


class IngestError(KnowledgeError):
    """One input file could not be ingested; the file is skipped with this reason."""


class UnsupportedFormatError(IngestError):
    """The file's extension or sniffed content is not a format ingestion reads."""


class DocumentLimitError(IngestError):
    """The file breaks a configured limit (bytes, pages, rows, cells, parse time, memory)."""


class DocumentParseError(IngestError):
    """The file is corrupt, undecodable, empty, or lacks the expected structure."""


# --- packs -------------------------------------------------------------------------


class PackError(KioskError):
    """Base for knowledge pack problems."""


class PackFormatError(PackError):
    """A pack, index or key list is malformed: bad layout, lengths, msgpack or schema."""


class PackSignatureError(PackError):
    """Unsigned, signed by an untrusted key, a bad signature, or more than one signature."""


class PackIntegrityError(PackFormatError):
    """A section's length or sha256 differs from the signed manifest (tampered or truncated)."""


class PackVersionError(PackError):
    """The pack's version is not above the highest version ever accepted for its id."""


class PackExpiredError(PackError):
    """The pack (or index) has expired, or is dated in the future, under the clock policy."""


class PackCompatibilityError(PackError):
    """The pack needs another locale, a newer runtime, or was embedded with another model."""


class PackInstallError(PackError):
    """Building, checking or switching to the new knowledge base failed; the old one stays
    active."""


class PackDiskError(PackInstallError):
    """The disk filled up or reported an I/O error during an install; nothing was switched."""


class PackSourceError(PackError):
    """A pack source (HTTP channel, USB folder) failed: network, deadline, byte cap, odd file."""


class PackKeyError(PackError):
    """A signing key file is missing, unreadable, malformed or has unsafe permissions."""


# --- audio -------------------------------------------------------------------------


class AudioError(KioskError):
    """Audio input that cannot be decoded or breaks the configured limits."""


class AudioFormatError(AudioError):
    """The bytes are not audio we read (not WAV/FLAC/PCM, truncated, or a header that contradicts
    itself)."""


class AudioLimitError(AudioError):
    """The audio is well formed but breaks a [speech] limit (size, length, channels, rate, input
    speed)."""


class AudioStreamError(AudioError):
    """A streaming session was used wrongly (audio after the end, odd byte count)."""


class DecodeCancelledError(AudioStreamError):
    """A streaming decode was called off because its audio went stale (the visitor spoke on);
    internal to the session, never sent to a client."""


# --- answers -----------------------------------------------------------------------


class AnswerError(KioskError):
    """Base for answer pipeline problems."""


# --- server and audit --------------------------------------------------------------


class ServerError(KioskError):
    """Base for HTTP service problems (each maps to one 4xx/5xx status)."""

    status = 400


class RequestRejectedError(ServerError):
    """A request broke a rule: bad Host/Origin, missing token, over a size or time cap, malformed
    body."""


class RateLimitedError(ServerError):
    """A client asked too often, or is locked out after wrong PINs; ``retry_after_s`` says for
    how long."""

    status = 429

    def __init__(
        self, message: str, *, hint: str | None = None, retry_after_s: float = 1.0
    ) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class AuditError(KioskError):
    """The audit log cannot be opened, written or exported."""
