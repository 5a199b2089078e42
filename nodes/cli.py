"""The ``idis`` command: run a node, set up prefixes, import identifiers, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from nodes.settings import Settings, SettingsError, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        http=getattr(args, "http", None),
        role=getattr(args, "role", None),
        workers=getattr(args, "workers", None),
    )


def _migrate_if_asked(settings: Settings) -> None:
    from registry.migrate import upgrade

    if settings.migrate_on_start:
        upgrade(settings.database_url)


def cmd_serve(args: argparse.Namespace) -> int:
    from nodes.http.server import serve

    settings = _settings(args)
    _migrate_if_asked(settings)
    serve(settings)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from registry.migrate import downgrade, upgrade

    settings = _settings(args)
    if args.direction == "downgrade":
        downgrade(settings.database_url, args.revision or "-1")
    else:
        upgrade(settings.database_url, args.revision or "head")
    print(f"database {args.direction}d: {settings.database_url}")
    return 0


async def _prefix_init(settings: Settings, prefix: str, secret: str) -> str:
    from nodes.bootstrap import build_node
    from registry.prefixes import init_prefix

    node = build_node(settings)
    try:
        admin = await init_prefix(node.store, node.invalidator, prefix, secret)
    finally:
        await node.close()
    return str(admin.identity)


def cmd_prefix_init(args: argparse.Namespace) -> int:
    from registry.secrets import generate_secret

    settings = _settings(args)
    _migrate_if_asked(settings)
    if args.secret_file:
        secret = Path(args.secret_file).read_text(encoding="utf-8").strip()
        if not secret:
            print(f"error: {args.secret_file} is empty", file=sys.stderr)
            return 2
    else:
        secret = generate_secret()
    identity = asyncio.run(_prefix_init(settings, args.prefix, secret))
    print(f"prefix {args.prefix} homed; administrator {identity}")
    if not args.secret_file:
        print(f"secret (shown once, store it now): {secret}")
    return 0


async def _prefix_list(settings: Settings) -> list[str]:
    from nodes.bootstrap import build_store

    store = build_store(settings)
    try:
        return await store.homed_prefixes()
    finally:
        await store.close()


def cmd_prefix_list(args: argparse.Namespace) -> int:
    for prefix in asyncio.run(_prefix_list(_settings(args))):
        print(prefix)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from registry.importer import run_import

    settings = _settings(args)
    _migrate_if_asked(settings)
    return run_import(settings, Path(args.file), fmt=args.format)


def cmd_demo(args: argparse.Namespace) -> int:
    from nodes.demo import run_demo

    return run_demo(once=args.once)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="idis",
        description="Industrial Internet identifier resolution (Handle System compatible).",
    )
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a node")
    serve.add_argument(
        "--role", choices=["top-level", "dr", "secondary", "enterprise", "recursive"]
    )
    serve.add_argument("--http", help="HOST:PORT to listen on (IDIS_HTTP)")
    serve.add_argument("--workers", type=int, help="worker processes (IDIS_WORKERS)")
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser("migrate", help="upgrade (or downgrade) the database schema")
    migrate.add_argument(
        "direction", nargs="?", choices=["upgrade", "downgrade"], default="upgrade"
    )
    migrate.add_argument("revision", nargs="?")
    migrate.set_defaults(run=cmd_migrate)

    prefix = commands.add_parser("prefix", help="prefixes homed on this node")
    prefix_commands = prefix.add_subparsers(dest="prefix_command", required=True)
    init = prefix_commands.add_parser("init", help="home a prefix and create PREFIX/ADMIN")
    init.add_argument("prefix")
    init.add_argument("--secret-file", help="read the administrator's secret from this file")
    init.set_defaults(run=cmd_prefix_init)
    listing = prefix_commands.add_parser("list", help="list homed prefixes")
    listing.set_defaults(run=cmd_prefix_list)

    load = commands.add_parser("import", help="bulk-load identifiers from JSONL or CSV")
    load.add_argument("file")
    load.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file name")
    load.set_defaults(run=cmd_import)

    demo = commands.add_parser("demo", help="run a demonstration on the embedded default")
    demo.add_argument("--once", action="store_true", help="run the steps, report, exit")
    demo.set_defaults(run=cmd_demo)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except SettingsError as error:
        print(f"idis: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
