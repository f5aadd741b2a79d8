"""The ``runstream`` command line: services, migrations, the pipeline's parts, sync, the demo."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import typer

from runstream.settings import ClientSettings, ServiceSettings

app = typer.Typer(help="runstream: event-sourced run history for machine learning.", no_args_is_help=True)
services_app = typer.Typer(help="Local Kafka and PostgreSQL for development (no Docker needed).", no_args_is_help=True)
app.add_typer(services_app, name="services")
dead_letters_app = typer.Typer(help="Events (or single points/rows) the processors could not store.",
                               no_args_is_help=True)
app.add_typer(dead_letters_app, name="dead-letters")
token_app = typer.Typer(help="API tokens: each gives one workspace read, write or admin access (docs/SECURITY.md).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")

STATE_DIR = typer.Option(None, "--state-dir", help="Where the local services keep their data (default ./.state/stack).")


@services_app.callback()
def _services_need_a_checkout() -> None:
    _require_devstack()


def _require_devstack() -> None:
    """The local stack and the demo are dev tools: a wheel does not ship runstream.devstack."""
    import importlib.util

    if importlib.util.find_spec("runstream.devstack") is None:
        typer.echo("runstream: `services` and `demo` run from a source checkout of runstream (git clone, then "
                   "make install); this install has the SDK and the services only", err=True)
        raise typer.Exit(2)


def _state_dir(value: Path | None) -> Path:
    from runstream.devstack.stack import default_state_dir

    return value or default_state_dir()


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _service() -> None:
    """Set up a long-running service process: logging and the GC thresholds."""
    from runstream.serve import tune_gc

    _logging()
    tune_gc()


@services_app.command("up")
def services_up(state_dir: Path | None = STATE_DIR, fresh: bool = typer.Option(False, help="Wipe data first."),
                brokers: int = typer.Option(1, min=1, help="Kafka nodes; 3 make a replicated cluster "
                                                           "(topic replication 3, min.insync.replicas 2)."),
                sasl: bool = typer.Option(False, help="Kafka authenticates clients (SASL/SCRAM) and authorizes "
                                                      "them with ACLs: the SDK's user may only produce events.")) -> None:
    """Start Kafka (KRaft) and PostgreSQL on 127.0.0.1 and print their RUNSTREAM_* variables
    (also recorded in ~/.runstream/config.json, where a plain Workspace() finds them; with
    --sasl the services' credentials are printed and the SDK's recorded there)."""
    from runstream import devstack, localstack
    from runstream.ingest.topic import ensure_topic

    info = devstack.up(_state_dir(state_dir), kafka_port=9092, pg_port=5432, fresh=fresh, brokers=brokers, sasl=sasl)
    sdk = {k.removeprefix("RUNSTREAM_").lower(): v for k, v in info.sdk_env().items()}
    localstack.write(info.state_dir, {**sdk, "database_url": info.database_url,
                                      "api_database_url": info.api_database_url})
    settings = ServiceSettings.from_env({**os.environ, **info.env()})
    asyncio.run(ensure_topic(settings.kafka_bootstrap, settings.topic, settings.partitions,
                             security=settings.kafka_security()))
    for key, value in info.env().items():
        typer.echo(f"export {key}={value}")
    if info.sasl:
        typer.echo("# a training script's Kafka user (may only produce events), as in ~/.runstream/config.json:")
        for key, value in info.sdk_env().items():
            typer.echo(f"#   {key}={value}")


@services_app.command("down")
def services_down(state_dir: Path | None = STATE_DIR) -> None:
    """Stop the local services and a demo's background `serve` (safe when nothing runs)."""
    from runstream import devstack, localstack
    from runstream.devstack.demo import stop_background_serve

    stop_background_serve(_state_dir(state_dir))
    devstack.down(_state_dir(state_dir))
    localstack.forget(_state_dir(state_dir))


@services_app.command("status")
def services_status(state_dir: Path | None = STATE_DIR) -> None:
    from runstream import devstack
    from runstream.devstack.stack import broker_status, render_brokers

    info = devstack.read_info(_state_dir(state_dir))
    typer.echo(render_brokers(broker_status(_state_dir(state_dir))), nl=False)
    typer.echo("not running" if info is None else json.dumps(info.env(), indent=2))


@app.command()
def migrate() -> None:
    """Apply pending SQL migrations (hypertables too where TimescaleDB is available) and
    create the event topic (the SDK never creates it)."""
    from runstream.ingest.topic import ensure_topic
    from runstream.schemas.migrate import migrate as run_migrations

    settings = ServiceSettings.from_env()
    report = run_migrations(settings.database_url)
    typer.echo(f"applied: {report.applied or 'none'}; pending: {report.pending or 'none'}; "
               f"timescaledb: {'yes' if report.timescaledb else 'no'}")
    asyncio.run(ensure_topic(settings.kafka_bootstrap, settings.topic, settings.partitions,
                             security=settings.kafka_security()))
    typer.echo(f"topic: {settings.topic} on {settings.kafka_bootstrap}")


@app.command()
def schema(output: Path = typer.Option(Path(__file__).resolve().parent.parent / "schemas" / "json" / "events.schema.json"),
           ts: bool = typer.Option(False, "--ts", help="Also write the UI's types to ui/src/contract.ts.")) -> None:
    """Write the published JSON Schema of the events (and with --ts the UI's TypeScript types)."""
    from runstream.schemas.events import json_schema

    output.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    typer.echo(f"wrote {output}")
    if ts:
        from runstream.schemas.typescript import typescript

        target = Path(__file__).resolve().parent.parent / "ui" / "src" / "contract.ts"
        target.write_text(typescript())
        typer.echo(f"wrote {target}")


@app.command()
def serve(processors: int = typer.Option(1, help="Processor instances in this process."),
          api: bool = typer.Option(True, help="Serve the query API."),
          gateway: bool = typer.Option(True, help="Serve the ingest gateway.")) -> None:
    """Run processors, gateway and query API together (one machine)."""
    from runstream.serve import serve as run

    _service()
    asyncio.run(run(ServiceSettings.from_env(), processors=processors, api=api, gateway=gateway))


@app.command()
def processor() -> None:
    """Run one processor (scale by running more; they share the consumer group); Prometheus /metrics on RUNSTREAM_METRICS_PORT."""
    from runstream.serve import serve as run

    _service()
    asyncio.run(run(ServiceSettings.from_env(), processors=1, api=False, gateway=False))


@app.command("gateway")
def gateway_cmd() -> None:
    """Run the HTTP ingest gateway."""
    from runstream.ingest.gateway import main

    _service()
    main(ServiceSettings.from_env())


@app.command("api")
def api_cmd() -> None:
    """Run the query API."""
    from runstream.query_api.app import main

    _service()
    main(ServiceSettings.from_env())


@app.command()
def sync(path: Path | None = typer.Argument(None, help="A spool directory or one run's folder in it "
                                                          "(default: RUNSTREAM_SPOOL_DIR).")) -> None:
    """Upload offline runs from the local spool, in order; running it again sends nothing twice."""
    from runstream.errors import RunstreamError
    from runstream.spool import sync as run_sync

    settings = ClientSettings.from_env()
    try:
        report = run_sync(settings, path)
    except RunstreamError as exc:
        typer.echo(f"runstream sync: {exc}", err=True)
        raise typer.Exit(1) from None
    where = path or settings.spool_dir
    typer.echo(f"{where}: {len(report.runs)} run(s); sent {report.sent} event(s) and {report.blobs} file(s); "
               f"{report.already} event(s) were already synced")


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
"""For commands whose options belong to an argparse ``main(argv)`` (its ``--help`` included)."""


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def replay(ctx: typer.Context) -> None:
    """Rebuild every projection from the events archive and swap it in (options: runstream replay --help)."""
    from runstream.processors.replay import main

    raise typer.Exit(main(ctx.args))


def _checkout_module(module: str, args: list[str]) -> int:
    """Run ``python -m <module>`` of benchmarks/, which only a source checkout has (no wheel
    ships it): from the checkout this runstream was installed from (editable)."""
    import subprocess
    import sys

    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "benchmarks" / "__init__.py").is_file():
        typer.echo(f"runstream: {module.split('.')[0]} runs from a source checkout of runstream "
                   "(git clone, then make install); this install has none", err=True)
        return 2
    return subprocess.call([sys.executable, "-m", module, *args], cwd=checkout)


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def bench(ctx: typer.Context) -> None:
    """Measure the pipeline against SPEC §9 and MLflow; prints a table (options: runstream bench --help)."""
    raise typer.Exit(_checkout_module("benchmarks", ctx.args))


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def chaos(ctx: typer.Context) -> None:
    """Inject each fault into a real stack under a known workload; prints the loss table (options: runstream chaos --help)."""
    raise typer.Exit(_checkout_module("benchmarks.chaos", ctx.args))


@app.command()
def demo(state_dir: Path | None = STATE_DIR,
         keep_running: bool = typer.Option(True, help="Leave the services running for the web UI afterwards.")) -> None:
    """The seed's sweep end to end: start everything, submit the seed's option 2, print the best run and the UI's URL."""
    _require_devstack()
    from runstream.devstack.demo import main

    main(_state_dir(state_dir), keep_running=keep_running)


def _run_id(value: str | None) -> str | None:
    import uuid

    if value is not None:
        try:
            uuid.UUID(value)
        except ValueError:
            raise typer.BadParameter(f"--run {value!r} is not a run id (a UUID)") from None
    return value


async def _with_db(work):  # type: ignore[no-untyped-def]
    import asyncpg

    conn = await asyncpg.connect(ServiceSettings.from_env().database_url)
    try:
        return await work(conn)
    finally:
        await conn.close()


@dead_letters_app.command("list")
def dead_letters_list(run: str | None = typer.Option(None, "--run", help="Only this run's."),
                      limit: int = typer.Option(100, "--limit", min=1, help="At most this many."),
                      all_: bool = typer.Option(False, "--all", help="Include those already re-driven.")) -> None:
    """List dead letters, oldest first: id, run, seq, item (-1 = whole event), where, when, reason."""
    from runstream.display import inert
    from runstream.processors.deadletters import list_letters

    letters = asyncio.run(_with_db(lambda conn: list_letters(conn, _run_id(run), limit, all_)))
    for d in letters:
        state = f" retried {d.retried_at:%Y-%m-%d %H:%M:%S}" if d.retried_at else ""
        typer.echo(f"{d.id}\trun={d.run_id or '-'}\tseq={'-' if d.seq is None else d.seq}\titem={d.item}\t"
                   f"{d.topic}/{d.partition}@{d.offset}\t{d.received_at:%Y-%m-%d %H:%M:%S}\t{inert(d.reason)}{state}")
    typer.echo(f"{len(letters)} dead letter(s)", err=True)


@dead_letters_app.command("retry")
def dead_letters_retry(run: str | None = typer.Option(None, "--run", help="Only this run's."),
                       ids: list[int] | None = typer.Option(None, "--id", help="Only these (repeatable).")) -> None:
    """Re-drive pending dead letters (after a fix): stored ones are marked retried, the rest keep a new reason."""
    from runstream.display import inert
    from runstream.processors.deadletters import retry

    outcomes = asyncio.run(_with_db(lambda conn: retry(conn, _run_id(run), ids or ())))
    for o in outcomes:
        if not o.stored:
            typer.echo(f"{o.id}\tstill failing: {inert(o.reason)}")
        elif o.new_letters:
            typer.echo(f"{o.id}\tstored, but {o.new_letters} of its points/rows still fail (new dead letters)")
    stored = sum(o.stored for o in outcomes)
    typer.echo(f"re-drove {len(outcomes)} dead letter(s): {stored} stored, {len(outcomes) - stored} still failing")
    if stored < len(outcomes):
        raise typer.Exit(1)


@token_app.command("create")
def token_create(workspace: str = typer.Option(..., "--workspace", help="The workspace the token gives access to."),
                 scope: str = typer.Option(..., "--scope", help="read, write (read + send events and files) "
                                                                "or admin."),
                 name: str | None = typer.Option(None, "--name", help="A label to recognise it by in `token list`."),
                 expires: float | None = typer.Option(None, "--expires", help="Days until it expires "
                                                                                "(default: never).")) -> None:
    """Create a token and print it (once: only a salted hash of it is stored)."""
    from runstream.query_api import tokens

    try:
        token, row = asyncio.run(_with_db(lambda conn: tokens.create(conn, workspace, scope, name, expires)))
    except tokens.TokenError as exc:
        typer.echo(f"runstream token create: {exc}", err=True)
        raise typer.Exit(2) from None
    until = f", expires {row['expires_at']:%Y-%m-%d %H:%M} UTC" if row["expires_at"] else ""
    typer.echo(f"token {row['token_id']} for workspace {row['workspace']!r}, scope {row['scope']}{until}. "
               "It is shown only this once; give it as RUNSTREAM_TOKEN, Workspace(token=...) or the web UI's login:",
               err=True)
    typer.echo(token)


@token_app.command("list")
def token_list(workspace: str | None = typer.Option(None, "--workspace", help="Only this workspace's.")) -> None:
    """List tokens (never their secret): id, workspace, scope, name, created, expires, revoked."""
    from runstream.query_api import tokens

    rows = asyncio.run(_with_db(lambda conn: tokens.list_tokens(conn, workspace)))
    for r in rows:
        expires = f"{r['expires_at']:%Y-%m-%d %H:%M}" if r["expires_at"] else "never"
        revoked = f"revoked {r['revoked_at']:%Y-%m-%d %H:%M:%S}" if r["revoked_at"] else "active"
        label = (r["name"] or "-").encode("unicode_escape").decode("ascii")  # shown inertly
        typer.echo(f"{r['token_id']}\t{r['workspace']}\t{r['scope']}\t{label}\t"
                   f"created {r['created_at']:%Y-%m-%d %H:%M}\texpires {expires}\t{revoked}")
    typer.echo(f"{len(rows)} token(s)", err=True)


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="The token's id (from `token list`) or the token.")) -> None:
    """Revoke a token: every API and gateway process refuses it within a second."""
    from runstream.query_api import tokens

    try:
        done = asyncio.run(_with_db(lambda conn: tokens.revoke(conn, token_id)))
    except tokens.TokenError as exc:
        typer.echo(f"runstream token revoke: {exc}", err=True)
        raise typer.Exit(2) from None
    if not done:
        typer.echo(f"runstream token revoke: no active token {token_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")


if __name__ == "__main__":
    app()
