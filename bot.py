"""Entry point: load the settings, open the core, serve the HTTP API (and, with a Discord token,
the bot), and close everything in reverse on exit.

    python bot.py [--config FILE]                    start the gateway
    python bot.py [--config FILE] create-admin NAME  create an admin; prints only its key
    python bot.py [--config FILE] needs-local-model  exit 0 when the local model would serve
    python bot.py [--config FILE] copy-db --to URL   copy the SQLite database into PostgreSQL
    python bot.py [--config FILE] backup FILE        a consistent copy of the SQLite database
    python bot.py [--config FILE] invite-url [--application-id ID]
                                                     the URL that adds the bot to a server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import logging.handlers
import queue
import signal
import sys
from typing import Any, TextIO

from core import event_loop
from core.config import ConfigError, Settings, load_settings
from core.errors import GatewayError
from core.gateway import Gateway, build_gateway
from core.leadership import while_leading
from core.local_model import LocalModelError, LocalModelServer, needs_local_model
from core.log_batch import BatchingHandler, BatchListener, BatchWriter, LineFormatter
from core.storage import StorageError
from core.storage.sqlite import SqliteDatabase
from web.access_log import SecretFilter
from web.app import create_app
from web.server import EdgeServer

log = logging.getLogger("gateway")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LLM gateway for organisations")
    parser.add_argument("--config", default="config.toml", help="TOML settings file")
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the gateway (the default)")
    create = commands.add_parser("create-admin", help="create an admin and print its key")
    create.add_argument("name")
    commands.add_parser("needs-local-model",
                        help="exit 0 when no account has a key, so the local model would serve")
    copy = commands.add_parser(
        "copy-db", help="copy this configuration's SQLite database into an empty PostgreSQL "
                        "database (password: in the URL or $PGPASSWORD)")
    copy.add_argument("--to", required=True, metavar="postgresql://USER@HOST:PORT/DBNAME")
    backup = commands.add_parser(
        "backup", help="a consistent copy of the SQLite database, also while the gateway runs")
    backup.add_argument("file")
    invite = commands.add_parser("invite-url", help="print the URL that adds the Discord bot "
                                 "to a server, with the permissions it needs")
    invite.add_argument("--application-id", type=int, default=0,
                        help="the Discord application's id (default: [discord] application_id)")
    return parser.parse_args(argv)


async def create_admin(settings: Settings, name: str) -> int:
    async with build_gateway(settings) as gateway:
        try:
            key = await gateway.create_admin(name)
        except GatewayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(key, flush=True)
    return 0


async def copy_db(settings: Settings, url: str) -> None:
    # Here, not at the top: asyncpg's import costs a gateway on SQLite about 0.1 s of start-up.
    from core.storage.copy import copy_sqlite_to_postgres
    from core.storage.postgres import safe_url

    if settings.storage.backend != "sqlite":
        raise ConfigError("copy-db copies a SQLite database: point --config at the "
                          "configuration whose [storage] is the SQLite file to move")
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"--to must be a postgresql:// URL, got {url!r}")
    print(f"copying {settings.storage.sqlite_path} into {safe_url(url)} ...", flush=True)
    copied = await copy_sqlite_to_postgres(
        settings.storage.sqlite_path, url, progress=lambda line: print(line, flush=True))
    print(f"done: {sum(copied.values()):,} rows. Set [storage] url to this database (and "
          "GATEWAY_SECRET_KEY to the key that sealed the own keys) and start the gateway.",
          flush=True)


async def backup(settings: Settings, file: str) -> None:
    if settings.storage.backend != "sqlite":
        from core.storage.postgres import safe_url
        raise ConfigError(f"back up PostgreSQL with its own tool: pg_dump -Fc -f {file} "
                          f"'{safe_url(settings.storage.url)}'")
    async with SqliteDatabase(settings.storage.sqlite_path) as db:
        await db.backup(file)
    print(f"backed up {settings.storage.sqlite_path} to {file}", flush=True)


GC_YOUNG_THRESHOLD = 7000
"""Allocations of container objects between two collections of the youngest generation
(CPython's default: 700). Each such collection walks every object of that generation still
alive, and with 64 requests in flight that is most of their frames, futures and records:
collections were 5 % of the event loop's instructions at c=64 (53 k a ``/v1`` request,
callgrind). Ten times fewer walks of about the same live set cost a tenth; objects without
cycles are still freed at once, and only cyclic garbage waits a little longer. 20,000 and
50,000 gained nothing more, and ``gc.freeze()`` of what start-up made nothing measurable."""


async def serve(settings: Settings) -> int:
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    async with contextlib.AsyncExitStack() as stack:
        if needs_local_model(settings):
            try:
                local = await stack.enter_async_context(LocalModelServer(settings.local_model))
            except LocalModelError as exc:
                log.error("%s", exc)
            else:
                log.info("no upstream account has a key: serving the local model as account "
                         "'%s'", local.account().name)
                settings = settings.model_copy(
                    update={"accounts": [*settings.accounts, local.account()]})
        gateway = await stack.enter_async_context(build_gateway(settings))
        return await run_fronts(gateway, settings)


async def run_fronts(gateway: Gateway, settings: Settings) -> int:
    """Serve the HTTP API (and, with a token, the Discord bot) until SIGINT or SIGTERM; the exit
    status."""
    first_key = await gateway.bootstrap_admin()
    if first_key:
        # Printed once, on stdout, never logged: it is the only copy.
        print(f"First start: admin key (shown once, keep it safe): {first_key}", flush=True)
    server = EdgeServer(create_app(gateway), settings.server)
    await server.start()
    for address in server.addresses:
        log.info("gateway listening on http://%s:%s (%s event loop)", *address[:2],
                 event_loop.loop_name(settings.server.event_loop))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    discord_bot = start_discord(gateway, settings)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await stop_discord(discord_bot)
        await server.stop()
    return 0


def start_discord(gateway: Gateway, settings: Settings) -> asyncio.Task[None] | None:
    """With a token in the environment, the Discord bot on this loop, over this gateway, on the
    one process that leads (every process may be started alike: see core/leadership). It
    retries on its own while Discord is unreachable; the HTTP API never waits for it."""
    token = gateway.secrets.discord_token
    if token is None:
        log.info("no Discord token in $%s: the bot is off", settings.discord.token_env)
        return None
    from discord_bot import run_discord  # discord.py only when it runs

    return asyncio.create_task(while_leading(
        gateway.storage.leadership("discord"),
        lambda: run_discord(gateway, settings, token.get_secret_value()),
        "the Discord bot"), name="discord bot")


async def stop_discord(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def print_invite_url(application_id: int) -> int:
    if not application_id:
        print("error: the invite URL needs the bot's application id: set [discord] "
              "application_id, or pass --application-id ID (Discord Developer Portal > your "
              "application > General Information > Application ID)", file=sys.stderr)
        return 2
    from discord_bot import invite_url  # discord.py only when it is needed

    print(invite_url(application_id), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    listener = configure_logging(args.log_level.upper())
    try:
        return run(args)
    finally:
        listener.stop()


def configure_logging(level: str, stream: TextIO | None = None) -> logging.handlers.QueueListener:
    """Log lines are formatted and written by a thread of their own: the event loop only
    collects them, and hands them over once a turn of the loop (core/log_batch). Under load,
    the lines of each request written from the loop took a quarter of the gateway's time, and
    handed over one by one, a wake-up of the writing thread each (bench/)."""
    # Our format names no file or line, so skip the stack walk that finds them for each record.
    logging._srcfile = None
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    writer = BatchWriter(stream or sys.stderr)
    writer.setFormatter(LineFormatter())
    # Keys masked in every line, whatever logged it (aiohttp logs a request it cannot parse
    # with its raw header lines), on the writing thread rather than the event loop.
    writer.addFilter(SecretFilter())
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = BatchingHandler(records)
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(handler)
    listener = BatchListener(records, handler, writer)
    listener.start()
    return listener


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "create-admin":
            return asyncio.run(create_admin(settings, args.name))
        elif args.command == "needs-local-model":
            return 0 if needs_local_model(settings) else 1
        elif args.command == "copy-db":
            asyncio.run(copy_db(settings, args.to))
        elif args.command == "backup":
            asyncio.run(backup(settings, args.file))
        elif args.command == "invite-url":
            return print_invite_url(args.application_id or settings.discord.application_id)
        else:
            return event_loop.run(serve(settings), settings.server.event_loop)
    except (ConfigError, StorageError) as exc:
        # A database that cannot be reached or used, a missing shared secret: the operator's
        # to fix, said in one line rather than a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
