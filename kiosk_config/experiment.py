"""Experiment configs (YAML): the knobs of the answer pipeline, versioned by an id.

An experiment names how retrieval, query expansion and generation are set up
and which metrics an evaluation reports. Every answer records the id of the
experiment that produced it, so evaluation numbers and audit logs can be
traced back to the settings behind them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from runtime.errors import ConfigError

from .schema import Section

DEFAULT_EXPERIMENT_FILE = Path(__file__).resolve().parent / "experiments" / "default.yaml"
MAX_EXPERIMENT_BYTES = 256 * 1024

Metric = Literal[
    "recall@1", "recall@5", "recall@10", "mrr", "accuracy", "contradictions",
    "refusal_rate", "latency_p50", "latency_p95",
]


class RetrieverSettings(Section):
    mode: Literal["keyword", "vector", "hybrid"] = "hybrid"
    top_k: int = Field(default=5, ge=1, le=100)
    fusion: Literal["rrf"] = "rrf"
    rrf_k: int = Field(default=60, ge=1, le=1000)
    # embedder: reorder the fused candidates by their best sentence's cosine to the question
    # (runtime.knowledge.retrieval.EmbedderReranker); one embedder batch per question.
    rerank: Literal["none", "embedder"] = "none"


class QueryExpansionSettings(Section):
    rewrite_with_history: bool = True
    hyde: bool = False
    multi_hop: bool = False


class GeneratorSettings(Section):
    # What the visitor reads: "generate" shows the generator's answer (checked against the
    # quote, quote shown beside it); "quote" shows the quoted sentences themselves and loads
    # no generator for answers. Chosen by the accuracy table in docs/answers.md.
    compose: Literal["generate", "quote"] = "generate"
    model: str = "auto"
    backend: Literal["auto", "openvino", "onnxruntime-genai"] = "auto"
    prompt: str = "plain"
    context_passages: int = Field(default=0, ge=0, le=10)  # 0: only the quoted sentences
    max_tokens: int = Field(default=128, ge=1, le=2048)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)


class EvaluationSettings(Section):
    metrics: list[Metric] = Field(default_factory=lambda: ["recall@1", "recall@5", "mrr"])


class ExperimentConfig(Section):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    retriever: RetrieverSettings = Field(default_factory=RetrieverSettings)
    query_expansion: QueryExpansionSettings = Field(default_factory=QueryExpansionSettings)
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)


def load_experiment(path: str | Path | None = None) -> ExperimentConfig:
    """Read and validate one experiment YAML file; errors name the file and the key."""
    file = Path(path) if path is not None else DEFAULT_EXPERIMENT_FILE
    try:
        if file.stat().st_size > MAX_EXPERIMENT_BYTES:
            raise ConfigError(f"experiment file {file} is larger than {MAX_EXPERIMENT_BYTES} bytes")
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"experiment file {file} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"experiment file {file} cannot be read as YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"experiment file {file} must hold a mapping at the top level")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError(f"invalid experiment config in {file}:\n" + "\n".join(lines)) from None
