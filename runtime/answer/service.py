"""Assemble a ready answer pipeline from the config: knowledge, embedder, generator, settings.

Shared by `kiosk demo`, `kiosk ask`, `kiosk serve`, `kiosk eval answers` and the
answer benchmark, so they all answer the same way. Knowledge, in order: the
store given with ``--db``; the active signed pack when one is installed; the
bundled demo knowledge (built once, cached by content hash).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError

from .demo_store import DEMO_SOURCE, open_demo_store
from .embedding import load_answer_embedder
from .generation import load_answer_generator, prestart_answer_generator
from .pipeline import AnswerPipeline, PipelineSettings
from .static_faq import StaticFaq

log = logging.getLogger(__name__)


@dataclass
class Service:
    pipeline: AnswerPipeline
    knowledge: str  # what answers come from, in words
    generator: str  # what generates, or why nothing does
    placements: dict = field(default_factory=dict)
    packs: Any = None  # runtime.packs.serving.PackServing under `kiosk serve` (sync, installer)

    def close(self) -> None:
        if self.packs is not None:
            self.packs.stop()
        self.pipeline.close()
        generator = self.pipeline.generator
        if generator is not None:
            generator.close()  # stops the generator worker process, when there is one
        store = self.pipeline.store
        if hasattr(store, "close") and not hasattr(store, "acquire"):
            store.close()


def _active_packs(cfg):
    """ActiveKnowledge when a pack is installed, else None."""
    try:
        from runtime.packs.active import ActiveKnowledge
        from runtime.packs.install import packs_dir_for
    except ImportError:
        return None
    packs = packs_dir_for(cfg)
    active = ActiveKnowledge(packs)
    try:
        if active.describe().get("using") in ("current", "previous"):
            return active
    except Exception as exc:  # noqa: BLE001 - a broken pack folder must not stop the kiosk
        log.warning("active pack unreadable (%s); using the demo knowledge", exc)
    return None


def uses_generator(experiment) -> bool:
    """Whether the experiment needs a generator: for answers or HyDE."""
    return experiment.generator.compose == "generate" or experiment.query_expansion.hyde


def with_experiment_generator(cfg, experiment):
    """``cfg`` with ``[models] generator`` pinned to the experiment's ``generator.model`` (and
    ``backend``) when it names one; "auto" leaves the choice to the config and the selector."""
    gen = experiment.generator
    if gen.model == "auto":
        if gen.backend != "auto":
            raise ConfigError(
                f"experiment {experiment.id}: generator.backend = {gen.backend!r} needs a "
                "generator.model",
                hint="name the model as well (e.g. qwen2.5-coder-0.5b-instruct), or set "
                "backend: auto",
            )
        return cfg
    pin = gen.model if gen.backend == "auto" else f"{gen.model}:{gen.backend}"
    out = cfg.model_copy(deep=True)
    out.models.generator = pin
    return out


def build_service(
    cfg,
    *,
    db: Path | None = None,
    with_generator: bool | None = None,
    progress=None,
    settings: PipelineSettings | None = None,
    experiment=None,
) -> Service:
    """The answer service the config describes. ``with_generator``: True loads the generator,
    False does not, None (the default) loads it when the experiment uses one."""
    from kiosk_config.experiment import load_experiment
    from runtime.knowledge.store import KnowledgeStore

    if experiment is None:
        experiment = load_experiment(cfg.answer.experiment)
    cfg = with_experiment_generator(cfg, experiment)
    gen_reason = "generator not requested"
    if with_generator is None:
        with_generator = uses_generator(experiment)
        gen_reason = f"no generator: experiment {experiment.id} answers with quoted passages"
    if with_generator:
        prestart_answer_generator(cfg)  # the worker loads while the embedder and store do
    embedder = load_answer_embedder(cfg)
    if db is not None:
        store = KnowledgeStore.open(
            Path(db),
            embedding_model=embedder.model_id,
            dim=embedder.dim,
            create=False,
            readonly=True,
        )
        knowledge = f"store {db}"
    else:
        store = _active_packs(cfg)
        if store is not None:
            d = store.describe()
            knowledge = f"pack {d.get('pack_id')} v{d.get('version')}"
        else:
            store, built = open_demo_store(cfg.paths.data_dir, embedder, progress=progress)
            knowledge = f"demo knowledge {store.path}" + (" (just built)" if built else "")
    generator, gen_note = (
        load_answer_generator(cfg) if with_generator else (None, gen_reason)
    )
    settings = settings or PipelineSettings.from_config(cfg, experiment)
    static = None
    faq_csv = DEMO_SOURCE / "faq.csv"
    if faq_csv.is_file():
        static = StaticFaq.from_csv(faq_csv)
    pipeline = AnswerPipeline(
        store,
        embedder,
        generator,
        settings=settings,
        languages=cfg.kiosk.languages,
        staff_handoff=dict(cfg.kiosk.staff_handoff),
        kiosk_name=cfg.kiosk.name,
        static_faq=static,
    )
    pipeline.warm_up()
    placements = {
        "embedder": embedder.describe(),
        "generator": generator.describe() if generator else None,
    }
    return Service(pipeline, knowledge, gen_note, placements)
