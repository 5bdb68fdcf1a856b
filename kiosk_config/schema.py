"""The kiosk's configuration: one validated model, one class per TOML table.

Every model forbids unknown keys, so a typo fails at start with the key's
name instead of being silently ignored. Defaults here are the documented
defaults of ``kiosk_config/kiosk.toml``; ``docs/configuration.md`` describes
every key. Each subsystem owns its own table class below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Device = Literal["NPU", "GPU", "CPU"]
Language = Literal["zh", "en"]


def _default_data_dir() -> Path:
    return (
        Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "kiosk-assistant"
    )


def _default_model_cache() -> Path:
    return (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "kiosk-assistant"
        / "models"
    )


class Section(BaseModel):
    """Base for every table: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KioskSection(Section):
    """Who the kiosk is and how it speaks to visitors."""

    name: str = "Riverside City Service Hall"
    languages: list[Language] = Field(default_factory=lambda: ["zh", "en"], min_length=1)
    chinese_script: Literal["simplified", "traditional"] = "simplified"
    staff_handoff: dict[Language, str] = Field(
        default_factory=lambda: {
            "en": "I don't know the answer to that. Please ask the staff at the help desk "
            "or press the \"Call staff\" button.",
            "zh": "这个问题我无法确定答案。请到服务台咨询工作人员，或按“呼叫工作人员”按钮。",
        }
    )


class PathsSection(Section):
    """Where the kiosk keeps its state. Both folders live outside the source tree."""

    data_dir: Path = Field(default_factory=_default_data_dir)
    model_cache: Path = Field(default_factory=_default_model_cache)
    manifests: Path | None = None  # None: the models/ folder beside the runtime package

    @field_validator("data_dir", "model_cache", "manifests")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(os.path.expandvars(str(v))).expanduser()


class DevicesSection(Section):
    """Which device each model may run on, in order of preference."""

    preference: list[Device] = Field(default_factory=lambda: ["NPU", "GPU", "CPU"], min_length=1)
    threads: int = Field(default=2, ge=1, le=256, description="CPU threads per model runner")

    @field_validator("preference")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each device may appear once")
        return v


class ModelsSection(Section):
    """Which prepared model does each job. Ids name manifests in models/."""

    embedder: str = "use-multilingual-v3"
    embedder_backend: Literal["auto", "onnxruntime", "openvino"] = "auto"
    embed_batch_size: int = Field(default=32, ge=1, le=1024)
    generator: str = "auto"
    transcriber: str = "whisper-base"
    synthesizer_en: str = "hibari-en"


class ServerSection(Section):
    """The HTTP service. Binds to loopback unless told otherwise."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"])
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # Security (docs/server.md): tokens for non-loopback clients, admin PIN/token, CORS.
    api_tokens: list[str] = Field(
        default_factory=list, description="bearer tokens accepted from non-loopback clients"
    )
    admin_pin: str | None = Field(
        default=None, description="PIN for /v1/admin (header X-Admin-Pin); None: admin off"
    )
    admin_token: str | None = Field(
        default=None, description="bearer token for /v1/admin; None: PIN only"
    )
    admin_max_attempts: int = Field(
        default=5, ge=1, le=100, description="wrong PINs per client before lockout"
    )
    admin_lockout_s: float = Field(default=300.0, gt=0, le=86400)
    admin_global_max_failures: int = Field(
        default=50, ge=1, le=100_000, description="wrong PINs from all clients per lockout window"
    )
    cors_origins: list[str] = Field(default_factory=list, description="empty: CORS off")
    max_ws_message_bytes: int = Field(default=64 * 1024, ge=320, le=16 * 1024 * 1024)
    body_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="whole request body must arrive by then"
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="request headers must arrive by then"
    )
    # Admission control.
    workers: int = Field(
        default=2, ge=1, le=64, description="pipeline turns running at once (threads)"
    )
    queue_limit: int = Field(
        default=32, ge=0, le=10_000, description="turns waiting for a worker; more are degraded"
    )
    deadline_ms: int = Field(
        default=8000, ge=50, le=600_000, description="default per-request deadline"
    )
    rate_limit_per_s: float = Field(
        default=5.0, ge=0, le=100_000, description="per client; 0: no limit"
    )
    rate_limit_burst: int = Field(default=20, ge=1, le=1_000_000)
    rate_limit_loopback: bool = Field(
        default=False, description="also rate-limit loopback clients (the kiosk's own UI)"
    )
    max_connections: int = Field(default=2048, ge=16, le=100_000)


class KnowledgeSection(Section):
    """The knowledge store and retrieval."""

    database: Path | None = None  # None: <data_dir>/knowledge/dev.sqlite (used by `kiosk ingest`)
    top_k: int = Field(default=5, ge=1, le=100)
    # Ingestion limits (docs/ingestion.md): every input file is untrusted.
    max_file_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="larger files are skipped"
    )
    max_pdf_pages: int = Field(default=2000, ge=1)
    max_table_rows: int = Field(default=100_000, ge=1, description="CSV/XLSX rows read per file")
    max_table_cells: int = Field(
        default=2_000_000, ge=1, description="XLSX/CSV/DOCX table cells per file"
    )
    max_unzipped_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="DOCX/XLSX inflated size cap"
    )
    max_text_chars: int = Field(
        default=20_000_000, ge=1000, description="extracted characters per file"
    )
    parse_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="wall time to parse one file"
    )
    parse_memory_mb: int = Field(
        default=2048, ge=128, description="address-space cap of the parse worker"
    )
    # Chunking (chosen by measurement, see docs/ingestion.md).
    chunk_max_tokens: int = Field(
        default=200, ge=16, le=4096, description="CJK char = 1, English word ~1.3"
    )
    chunk_min_tokens: int = Field(
        default=40, ge=0, le=4096, description="shorter chunks take a neighbour"
    )
    chunk_similarity: float = Field(
        default=0.7, ge=-1.0, le=1.0, description="semantic merge: min cosine"
    )
    chunk_semantic: bool = True
    chunk_overlap_tokens: int = Field(
        default=0, ge=0, le=1024, description="repeated from the previous chunk"
    )


class PacksSection(Section):
    """Knowledge packs: trust, sources and limits."""

    trusted_keys: list[str] = Field(default_factory=list)
    channel_url: str | None = None
    channel: str = "stable"
    usb_mount: Path | None = None
    max_pack_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    directory: Path | None = None  # None: <data_dir>/packs (ACTIVE pointer, trust state, stores)
    sync_interval_s: int = Field(default=3600, ge=0, le=7 * 86400, description="0: only on demand")
    download_deadline_s: float = Field(default=900.0, gt=0, le=86400)
    http_retries: int = Field(default=4, ge=0, le=20)
    clock_skew_s: int = Field(
        default=300, ge=0, le=86400, description="how far in the future a pack may be dated"
    )
    usb_poll_s: float = Field(default=5.0, gt=0, le=3600)
    smoke_top_k: int = Field(default=5, ge=1, le=50)


class SpeechSection(Section):
    """Speech in and out."""

    enabled: bool = True
    # Longest file or utterance accepted.
    max_audio_seconds: float = Field(default=30.0, gt=0, le=600)
    # Untrusted audio: checked from the header before anything is allocated (docs/speech.md).
    max_file_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024**3)
    max_channels: int = Field(default=2, ge=1, le=16)
    min_sample_rate: int = Field(default=8000, ge=1000, le=48000)
    max_sample_rate: int = Field(default=96000, ge=8000, le=384000)
    # Decoding, chosen by scripts/bench/asr.py on 2 cores (docs/speech.md has the numbers).
    compute_type: Literal["int8", "int8_float32", "float32", "default"] = "int8"
    beam_size: int = Field(default=1, ge=1, le=10)
    temperatures: list[float] = Field(
        default_factory=lambda: [0.0, 0.4, 0.8], min_length=1, max_length=8
    )
    without_timestamps: bool = True
    # Encode speech + window_pad_seconds, not whisper's fixed 30 s (falls back).
    short_window: bool = True
    window_pad_seconds: float = Field(default=2.0, ge=0.5, le=30.0)
    # Smallest encoder window per language; Mandarin needs fewer slow redos at 10 s
    # (docs/speech.md).
    min_window_seconds: dict[Literal["zh", "en"], float] = Field(
        default_factory=lambda: {"zh": 10.0}
    )
    # Redo a decode the reference way (30 s window, beam 5) when its lowest segment average
    # log-probability is under this; -10 redoes only loops and failed decodes.
    escalate_logprob: float = Field(default=-0.35, ge=-10.0, le=0.0)
    vad_trim: bool = True  # trim silence from files with Silero VAD before decoding
    vad_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    # Audio kept around speech when trimming files; the audio a streaming decode sees after speech.
    vad_pad_ms: int = Field(default=300, ge=0, le=2000)
    prompt_max_chars: int = Field(default=160, ge=0, le=800)  # pack vocabulary prompt
    number_form: Literal["arabic", "keep"] = "arabic"  # how numbers are shown and matched
    # Streaming (WebSocket): 16 kHz mono s16le chunks.
    endpoint_silence_ms: int = Field(default=500, ge=100, le=5000)
    # Start the final decode after this much trailing silence (0: off); the decoder sees the speech
    # plus vad_pad_ms, this much of it real silence and the rest digital silence (docs/speech.md).
    speculate_ms: int = Field(default=32, ge=0, le=5000)
    # Streaming finals are redone the reference way only below this (files: escalate_logprob).
    stream_escalate_logprob: float = Field(default=-0.5, ge=-10.0, le=0.0)
    # 1200: a partial decode still running when speech ends delays the final (docs/speech.md)
    partial_interval_ms: int = Field(default=1200, ge=200, le=10_000)
    max_utterance_seconds: float = Field(default=15.0, gt=0, le=120)
    max_session_seconds: float = Field(default=120.0, gt=0, le=3600)
    max_input_rate: float = Field(default=2.0, ge=1.0, le=100.0)  # × real time, after the burst
    input_burst_seconds: float = Field(default=3.0, ge=0.0, le=60.0)
    max_chunk_bytes: int = Field(default=64 * 1024, ge=320, le=16 * 1024 * 1024)
    # Speaking answers.
    muted: bool = False
    espeak_binary: str = "espeak-ng"
    tts_max_chars: int = Field(default=2000, ge=10, le=100_000)  # per spoken answer
    tts_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("min_window_seconds")
    @classmethod
    def _window_within_whisper(cls, value: dict[str, float]) -> dict[str, float]:
        for lang, seconds in value.items():
            if not 0.0 <= seconds <= 30.0:
                raise ValueError(
                    f"min_window_seconds.{lang} = {seconds}: "
                    "must be 0-30 (whisper's window is 30 s)"
                )
        return value


class AnswerSection(Section):
    """The answer pipeline."""

    deadline_ms: int = Field(
        default=1000, ge=50, le=120_000, description="first words (generated or quoted) by then"
    )
    total_ms: int = Field(
        default=8000, ge=100, le=600_000, description="whole turn, generation included"
    )
    experiment: Path | None = None  # None: kiosk_config/experiments/default.yaml
    queue_size: int = Field(
        default=2,
        ge=1,
        le=64,
        description="generations running + waiting; more answer from the passage",
    )
    breaker_failures: int = Field(default=3, ge=1, le=100)
    breaker_reset_s: float = Field(default=30.0, gt=0, le=3600)
    faq_threshold: float = Field(
        default=0.80, ge=0.0, le=1.01, description="cosine for a confident FAQ match"
    )
    claim_check: bool = True
    cache_size: int = Field(default=512, ge=0, le=100_000)
    # The relevance gate (docs/answers.md, "Relevance gate"): answer from retrieval when the
    # best passage's cosine, or the share of question words in the quote, or the two summed
    # reach these; a topic word the knowledge never uses requires the sum to reach the last.
    min_similarity: float = Field(default=0.45, ge=0.0, le=1.01)
    min_overlap: float = Field(default=0.5, ge=0.0, le=1.01)
    min_combined: float = Field(default=0.7, ge=0.0, le=2.01)
    min_combined_unknown: float = Field(
        default=0.85,
        ge=0.0,
        le=2.01,
        description="lower: fewer answerable questions refused, more uncovered ones answered",
    )


class GenerationSection(Section):
    """How the generator runs: in a supervised worker process (docs/generation.md) or in-process."""

    isolation: Literal["process", "thread"] = Field(
        default="process",
        description=(
            "process: a crash, hang or memory blow-up costs a worker restart, not the kiosk"
        ),
    )
    worker_memory_mb: int = Field(
        default=4096,
        ge=0,
        le=1_048_576,
        description=(
            "memory cap of the worker (0: none); the 0.5B needs about 1 GB, the 1.5B about 2.5"
        ),
    )
    worker_memory_limit: Literal["data", "address-space"] = Field(
        default="data",
        description=(
            "data: RLIMIT_DATA (heap and anonymous maps); "
            "address-space: RLIMIT_AS (counts OpenVINO's large reserved maps too)"
        ),
    )
    worker_start_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="load + smoke answer; start-up waits this long for the worker",
    )
    worker_restart_min_s: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="first restart delay; doubles per failure in a row, with jitter",
    )
    worker_restart_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="restart delay cap"
    )
    worker_ping_interval_s: float = Field(default=2.0, gt=0, le=600)
    worker_ping_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="no pong by then: the worker is killed and restarted",
    )
    worker_grace_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="past a request's max time (or a cancel) before the worker counts as hung",
    )
    worker_request_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="time limit of a request that sets none"
    )


class AuditSection(Section):
    """The audit log of answered turns (redacted; docs/server.md)."""

    enabled: bool = True
    path: Path | None = None  # None: <data_dir>/audit/audit.sqlite
    retention_days: float = Field(default=90.0, ge=0, le=3650, description="0: keep forever")
    max_pending: int = Field(
        default=10_000,
        ge=10,
        le=1_000_000,
        description="turns queued for writing; more are dropped and counted",
    )


class LoggingSection(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = False  # one JSON object per log line (for log shippers)


class KioskConfig(Section):
    """The whole configuration. Load it with :func:`kiosk_config.load_config`."""

    kiosk: KioskSection = Field(default_factory=KioskSection)
    paths: PathsSection = Field(default_factory=PathsSection)
    devices: DevicesSection = Field(default_factory=DevicesSection)
    models: ModelsSection = Field(default_factory=ModelsSection)
    server: ServerSection = Field(default_factory=ServerSection)
    knowledge: KnowledgeSection = Field(default_factory=KnowledgeSection)
    packs: PacksSection = Field(default_factory=PacksSection)
    speech: SpeechSection = Field(default_factory=SpeechSection)
    answer: AnswerSection = Field(default_factory=AnswerSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    audit: AuditSection = Field(default_factory=AuditSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    # Derived locations, so no caller joins paths by hand.
    @property
    def manifest_dir(self) -> Path:
        if self.paths.manifests is not None:
            return self.paths.manifests
        return Path(__file__).resolve().parent.parent / "models"

    @property
    def knowledge_db(self) -> Path:
        return self.knowledge.database or self.paths.data_dir / "knowledge" / "dev.sqlite"

    @property
    def compiled_cache_dir(self) -> Path:
        """Where GPU/NPU compiled-model caches go (per the config's data folder)."""
        return self.paths.data_dir / "compiled"
