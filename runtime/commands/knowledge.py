"""`kiosk ingest` and `kiosk search`: fill the local knowledge store and look into it.

Both use the config's store file (``[knowledge] database``, default
``<data_dir>/knowledge/dev.sqlite``) unless ``--db`` names another, and the
configured embedder (``runtime.inference.loader.load_embedder``). Heavy imports
happen inside the commands so `kiosk --help` stays fast.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from runtime.cli import get_config


def _open_store(cfg, db: str | None, embedder, *, create: bool, readonly: bool):
    from runtime.knowledge.store import KnowledgeStore

    path = Path(db) if db else cfg.knowledge_db
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return KnowledgeStore.open(
        path, embedding_model=embedder.model_id, dim=embedder.dim, create=create, readonly=readonly
    )


def _load_embedder(cfg):
    from runtime.inference import loader

    return loader.load_embedder(cfg)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--db", type=click.Path(dir_okay=False), help="Store file. Default: [knowledge] database."
)
@click.option(
    "--category", default="", help="Category for these documents (FAQ rows keep their own)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (no progress bar).")
@click.pass_context
def ingest(
    ctx: click.Context, paths: tuple[Path, ...], db: str | None, category: str, as_json: bool
) -> None:
    """Add documents (Markdown, text, HTML, PDF, DOCX) and FAQ tables (CSV, XLSX) to the store.

    Folders are walked (hidden files and symbolic links are skipped). A file
    already in the store with the same content is left alone; a changed file
    replaces its old version; a file that cannot be read is skipped with a
    reason. Exits 1 only when no file could be ingested.
    """
    from rich.console import Console

    from runtime.knowledge.chunking import ChunkingSettings
    from runtime.knowledge.ingest import IngestLimits, ingest_paths

    cfg = get_config(ctx)
    err = Console(stderr=True)
    embedder = _load_embedder(cfg)
    chunking = ChunkingSettings.from_config(cfg.knowledge)
    limits = IngestLimits.from_config(cfg.knowledge)
    with _open_store(cfg, db, embedder, create=True, readonly=False) as store:
        if as_json:
            report = ingest_paths(
                store,
                paths,
                embedder,
                chunking=chunking,
                category=category,
                limits=limits,
                batch_size=cfg.models.embed_batch_size,
            )
        else:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("ingesting", total=None)

                def progress(done: int, total: int, result) -> None:
                    bar.update(
                        task,
                        completed=done,
                        total=total,
                        description=f"ingesting {Path(result.path).name}",
                    )

                report = ingest_paths(
                    store,
                    paths,
                    embedder,
                    chunking=chunking,
                    progress=progress,
                    category=category,
                    limits=limits,
                    batch_size=cfg.models.embed_batch_size,
                )
        stats = store.stats()
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "store": stats}, ensure_ascii=False, indent=2))
    else:
        _print_report(report, stats)
    if report.all_failed:
        ctx.exit(1)


def _print_report(report, stats: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(title="ingest report", show_lines=False)
    for name, justify in (
        ("file", "left"),
        ("status", "left"),
        ("chunks", "right"),
        ("faq", "right"),
        ("lang", "left"),
        ("reason", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    colours = {"added": "green", "unchanged": "dim", "skipped": "yellow"}
    for r in report.results:
        table.add_row(
            r.path,
            f"[{colours[r.status]}]{r.status}[/]",
            str(r.chunks),
            str(r.faq_entries),
            r.language,
            r.reason,
        )
    out.print(table, markup=True, highlight=False)
    t = report.totals()
    out.print(
        f"{t['files']} files: {t['added']} added, {t['unchanged']} unchanged, "
        f"{t['skipped']} skipped; "
        f"{t['chunks']} chunks, {t['faq_entries']} FAQ entries added. "
        f"Store {stats['path']}: {stats['documents']} documents, {stats['chunks']} chunks, "
        f"{stats['faq_entries']} FAQ entries ({stats['embedding_model']}, {stats['dim']}-d).",
        markup=False,
        highlight=False,
    )


@click.command()
@click.argument("query")
@click.option(
    "--k",
    "k",
    type=click.IntRange(1, 100),
    default=None,
    help="Hits to show. Default: [knowledge] top_k.",
)
@click.option(
    "--mode",
    type=click.Choice(["hybrid", "keyword", "vector"]),
    default="hybrid",
    show_default=True,
)
@click.option(
    "--lang",
    "langs",
    multiple=True,
    type=click.Choice(["zh", "en"]),
    help="Only chunks in this language.",
)
@click.option("--category", "categories", multiple=True, help="Only documents of this category.")
@click.option(
    "--faq/--no-faq", default=True, show_default=True, help="Also show the best FAQ matches."
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, exists=True),
    help="Store file. Default: [knowledge] database.",
)
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
@click.pass_context
def search(
    ctx: click.Context,
    query: str,
    k: int | None,
    mode: str,
    langs: tuple[str, ...],
    categories: tuple[str, ...],
    faq: bool,
    db: str | None,
    as_json: bool,
) -> None:
    """Search the knowledge store and print ranked hits with their citations and scores."""
    from runtime.errors import KnowledgeError
    from runtime.knowledge.records import SearchFilters

    cfg = get_config(ctx)
    query = query.strip()
    if not query:
        raise KnowledgeError(
            "the search query is empty", hint='pass a question, e.g. kiosk search "opening hours"'
        )
    if len(query) > 2000:
        raise KnowledgeError(
            f"the search query is {len(query)} characters; the limit is 2000",
            hint="ask a shorter question",
        )
    k = k or cfg.knowledge.top_k
    embedder = _load_embedder(cfg)
    path = Path(db) if db else cfg.knowledge_db
    if not path.exists():
        raise KnowledgeError(
            f"knowledge store {path} does not exist", hint="run `kiosk ingest PATH...` first"
        )
    query_vector = embedder.embed(query)
    vector = query_vector if mode != "keyword" else None
    filters = (
        SearchFilters(languages=langs, categories=categories) if (langs or categories) else None
    )
    with _open_store(cfg, db, embedder, create=False, readonly=True) as store:
        hits = store.search(query, vector, k=k, mode=mode, filters=filters)
        faq_hits = store.match_faq(query, query_vector, k=3, languages=langs) if faq else []
    if as_json:
        click.echo(
            json.dumps(
                {
                    "query": query,
                    "mode": mode,
                    "hits": [
                        {
                            "rank": n,
                            "chunk_id": h.chunk_id,
                            "score": h.score,
                            "scores": h.scores,
                            "citation": {**asdict(h.citation), "label": h.citation.label()},
                            "text": h.text,
                        }
                        for n, h in enumerate(hits, start=1)
                    ],
                    "faq": [asdict(f) for f in faq_hits],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    _print_hits(query, mode, hits, faq_hits)


def _snippet(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _print_hits(query: str, mode: str, hits, faq_hits) -> None:
    from rich.console import Console
    from rich.text import Text

    out = Console(highlight=False, soft_wrap=True)
    if not hits and not faq_hits:
        out.print(f"no hits for {query!r} ({mode})", markup=False)
        return
    for n, h in enumerate(hits, start=1):
        c = h.citation
        where = f"{c.source_path} chars {c.char_start}-{c.char_end}"
        detail = ", ".join(f"{key} {value:.4g}" for key, value in h.scores.items())
        line = Text()
        line.append(f"{n}. ", style="bold")
        line.append(c.label(), style="bold cyan")
        line.append(f"  score {h.score:.4f}" + (f" ({detail})" if detail else ""), style="dim")
        out.print(line)
        out.print(Text(f"   {where}", style="dim"))
        out.print(Text(f"   {_snippet(h.text)}"))
    if faq_hits:
        out.print(Text("FAQ matches", style="bold"))
        for f in faq_hits:
            line = Text(f"  {f.score:.3f} {f.method:<7} ", style="dim")
            line.append(f"{f.matched_question}", style="cyan")
            line.append(f"  [{f.faq_id}]", style="dim")
            out.print(line)
            out.print(Text(f"     {_snippet(f.answer, 160)}"))
