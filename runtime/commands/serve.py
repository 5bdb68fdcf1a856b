"""`kiosk serve`, `kiosk demo`, `kiosk ask`: the answer pipeline in a terminal or on HTTP."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import click

from runtime.cli import get_config

_db_option = click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Answer from this store (built by `kiosk ingest`) instead of the pack or demo knowledge.",
)
_nogen_option = click.option(
    "--no-generator", is_flag=True, help="Fast paths and quoted passages only."
)


def _build(ctx: click.Context, db: Path | None, no_generator: bool, quiet: bool = False):
    from runtime.answer.service import build_service

    cfg = get_config(ctx)

    def progress(done: int, total: int, result) -> None:
        if not quiet:
            click.echo(
                f"  building demo knowledge: {done}/{total} {Path(result.path).name}", err=True
            )

    svc = build_service(
        cfg, db=db, with_generator=False if no_generator else None, progress=progress
    )
    if not quiet:
        click.echo(f"knowledge: {svc.knowledge}", err=True)
        click.echo(f"{svc.generator}", err=True)
    return svc


def _print_answer(answer) -> None:
    click.echo(answer.text)
    for s in answer.sources:
        click.secho(f"  {s.label()}", fg="cyan")
        if s.quote and s.quote != answer.text:
            click.echo("    “" + s.quote.replace("\n", " ")[:300] + "”")
    timings = ", ".join(f"{k} {v:.0f}" for k, v in answer.timings_ms.items())
    click.secho(f"  path: {answer.path} · {timings} ms · trace {answer.trace_id}", dim=True)
    for note in answer.notes:
        click.secho(f"  note: {note}", dim=True)


@click.command()
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option(
    "--history",
    "history_json",
    default=None,
    help='Earlier turns as JSON: [{"role": "user", "content": "..."}, ...].',
)
@_db_option
@_nogen_option
@click.pass_context
def ask(
    ctx: click.Context,
    question: str,
    as_json: bool,
    history_json: str | None,
    db: Path | None,
    no_generator: bool,
) -> None:
    """Answer one QUESTION and print it with its sources, path and timings."""
    from runtime.answer.types import Turn
    from runtime.server.app import _parse_history

    history = []
    if history_json:
        try:
            history = _parse_history(json.loads(history_json))
        except ValueError:
            history = None
        if history is None:
            raise click.BadParameter(
                'expected [{"role": "user"|"assistant", "content": "..."}]', param_hint="--history"
            )
    svc = _build(ctx, db, no_generator, quiet=as_json)
    try:
        answer = svc.pipeline.answer(question, [Turn(t.role, t.content) for t in history])
    finally:
        svc.close()
    if as_json:
        click.echo(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
    else:
        _print_answer(answer)


@click.command()
@_db_option
@_nogen_option
@click.pass_context
def demo(ctx: click.Context, db: Path | None, no_generator: bool) -> None:
    """Answer typed questions from the bundled demo knowledge ("quit" or Ctrl-D ends)."""
    from runtime.answer.types import Turn

    svc = _build(ctx, db, no_generator)
    if svc.pipeline.generator is None:
        click.echo(
            "running without a generator: answers come from the cache, the FAQ and quoted passages",
            err=True,
        )
    history: list[Turn] = []
    try:
        while True:
            try:
                question = input("? ")
            except EOFError:
                break
            if question.strip().lower() in ("quit", "exit", "q"):
                break
            answer = svc.pipeline.answer(question, history)
            _print_answer(answer)
            history = [*history, Turn("user", question), Turn("assistant", answer.text)][-6:]
    finally:
        svc.close()


@click.command()
@click.option("--host", default=None, help="Bind address (default [server] host, loopback).")
@click.option(
    "--port", type=int, default=None, help="Port (default [server] port); 0 picks a free one."
)
@_db_option
@_nogen_option
@click.pass_context
def serve(
    ctx: click.Context, host: str | None, port: int | None, db: Path | None, no_generator: bool
) -> None:
    """Serve the kiosk on HTTP: / (form), /healthz, POST /v1/kiosk/ask."""
    import socket

    import uvicorn

    from runtime.server.app import AppState, create_app

    cfg = get_config(ctx)
    host = host or cfg.server.host
    port = cfg.server.port if port is None else port
    state = AppState()

    def build():
        svc = _build(ctx, db, no_generator)
        original = svc.pipeline._finish

        def finish_and_log(ans, timer):  # one line per answer on stderr
            event = original(ans, timer)
            click.echo(
                f"answer path={ans.path} lang={ans.language} "
                f"total_ms={ans.timings_ms.get('total', 0):.0f} "
                f"sources={len(ans.sources)} trace={ans.trace_id}",
                err=True,
            )
            return event

        svc.pipeline._finish = finish_and_log
        from runtime.packs.serving import start_pack_serving

        # Background pack sync + the installer the admin API uses (with the live embedder).
        svc.packs = start_pack_serving(cfg, svc)
        return svc

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    click.echo(f"kiosk serving on http://{shown}:{bound}/", err=False)
    sys.stdout.flush()
    threading.Thread(target=state.load, args=(build,), name="kiosk-load", daemon=True).start()
    app = create_app(state, max_body_bytes=cfg.server.max_body_bytes, cfg=cfg)
    from runtime.server.service_app import uvicorn_options

    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, **uvicorn_options(cfg))
    )
    try:
        server.run(sockets=[sock])
    finally:
        if state.service is not None:
            state.service.close()
