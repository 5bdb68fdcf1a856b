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
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "kiosk-assistant"


def _default_model_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiosk-assistant" / "models"


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


class KnowledgeSection(Section):
    """The knowledge store and retrieval."""

    database: Path | None = None  # None: <data_dir>/knowledge/dev.sqlite (used by `kiosk ingest`)
    top_k: int = Field(default=5, ge=1, le=100)
    # Ingestion limits (docs/ingestion.md): every input file is untrusted.
    max_file_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, description="larger files are skipped")
    max_pdf_pages: int = Field(default=2000, ge=1)
    max_table_rows: int = Field(default=100_000, ge=1, description="CSV/XLSX rows read per file")
    max_table_cells: int = Field(default=2_000_000, ge=1, description="XLSX/CSV/DOCX table cells per file")
    max_unzipped_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, description="DOCX/XLSX inflated size cap")
    max_text_chars: int = Field(default=20_000_000, ge=1000, description="extracted characters per file")
    parse_timeout_s: float = Field(default=60.0, gt=0, le=3600, description="wall time to parse one file")
    parse_memory_mb: int = Field(default=2048, ge=128, description="address-space cap of the parse worker")
    # Chunking (chosen by measurement, see docs/ingestion.md).
    chunk_max_tokens: int = Field(default=200, ge=16, le=4096)
    chunk_min_tokens: int = Field(default=40, ge=0, le=4096)
    chunk_similarity: float = Field(default=0.5, ge=-1.0, le=1.0)
    chunk_semantic: bool = True
    chunk_overlap_tokens: int = Field(default=0, ge=0, le=1024)


class PacksSection(Section):
    """Knowledge packs: trust, sources and limits."""

    trusted_keys: list[str] = Field(default_factory=list)
    channel_url: str | None = None
    channel: str = "stable"
    usb_mount: Path | None = None
    max_pack_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)


class SpeechSection(Section):
    """Speech in and out."""

    enabled: bool = True
    max_audio_seconds: float = Field(default=30.0, gt=0, le=600)


class AnswerSection(Section):
    """The answer pipeline."""

    deadline_ms: int = Field(default=1000, ge=50, le=120_000)
    experiment: Path | None = None  # None: kiosk_config/experiments/default.yaml


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
