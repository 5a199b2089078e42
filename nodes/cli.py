"""The ``idis`` command: run a node, set up prefixes, import identifiers, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from nodes.enterprise_cli import add_enterprise_commands
from nodes.loadtest_cli import add_loadtest_commands
from nodes.national.cli import add_national_commands
from nodes.settings import Settings, SettingsError, load_settings, read_secret_file
from nodes.stats.cli import add_stats_commands, recount
from nodes.token_cli import add_token_commands
from resolver.errors import HandleError

if TYPE_CHECKING:
    from registry.prefixes import PrefixAdmin


def _settings(args: argparse.Namespace) -> Settings:
    from registry.secrets import use_key_file

    settings = load_settings(
        http=getattr(args, "http", None),
        role=getattr(args, "role", None),
        workers=getattr(args, "workers", None),
    )
    # Every command may store or check a secret: the key (made on first use) is loaded here.
    use_key_file(settings.secret_key_path)
    return settings


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


async def _prefix_init(settings: Settings, prefix: str, secret: str) -> PrefixAdmin:
    from nodes.bootstrap import build_node
    from registry.prefixes import init_prefix

    node = build_node(settings)
    try:
        admin = await init_prefix(node.store, node.invalidator, prefix, secret)
    finally:
        await node.close()
    if admin.created:
        await _baseline(settings, prefix)
    return admin


async def _baseline(settings: Settings, prefix: str) -> None:
    """Count the identifiers of a prefix just homed (its administrator, written without the
    registrar): the national statistics' baseline, before the node serves it.  (A prefix
    homed otherwise is counted at its first report.)"""
    if settings.stats.enabled:
        await recount(settings.database_url, [prefix])


def _secret(secret_file: str | None) -> tuple[str, bool]:
    """The secret from ``secret_file``, or a new one; the flag says it must be shown."""
    from registry.secrets import generate_secret, weakness

    if not secret_file:
        return generate_secret(), True
    secret = read_secret_file(secret_file)
    problem = weakness(secret)
    if problem is not None:
        raise SettingsError(f"--secret-file {secret_file}: {problem}")
    return secret, False


def cmd_prefix_init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _migrate_if_asked(settings)
    secret, shown = _secret(args.secret_file)
    admin = asyncio.run(_prefix_init(settings, args.prefix, secret))
    if not admin.created:
        print(f"prefix {args.prefix} was set up already; homed here, administrator and secret kept")
        return 0
    print(f"prefix {args.prefix} homed; administrator {admin.identity}")
    if shown:
        print(f"secret (shown once, store it now): {secret}")
    return 0


async def _prefix_list(settings: Settings) -> list[str]:
    from nodes.bootstrap import build_store

    store = build_store(settings)
    try:
        return await store.homed_prefixes()
    finally:
        await store.close()


async def _prefix_allocate(settings: Settings, prefix: str, secret: str) -> str:
    from nodes.bootstrap import build_node
    from registry.prefixes import allocate_prefix

    node = build_node(settings)
    try:
        return str(await allocate_prefix(node.store, node.invalidator, prefix, secret))
    finally:
        await node.close()


def cmd_prefix_allocate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _migrate_if_asked(settings)
    secret, shown = _secret(args.secret_file)
    identity = asyncio.run(_prefix_allocate(settings, args.prefix, secret))
    print(f"prefix {args.prefix} allocated; its holder authenticates as {identity}")
    if shown:
        print(f"secret (shown once, give it to the holder): {secret}")
    return 0


async def _join(settings: Settings, prefix: str, secret: str) -> str:
    from nodes.bootstrap import build_node
    from nodes.federation import register_sites
    from registry.prefixes import init_prefix
    from resolver.identifiers import prefix_handle

    if not settings.federation.top_level:
        raise SettingsError("IDIS_FEDERATION__TOP_LEVEL: no top-level node to register with")
    node = build_node(settings)
    try:
        # Joining again after a restart or a move is fine: the local records stay.
        admin = await init_prefix(node.store, node.invalidator, prefix, secret)
    finally:
        await node.close()
    if admin.created:
        await _baseline(settings, prefix)
    identity = f"300:{prefix_handle(prefix)}"
    from nodes.handle.site import load_public_key, native_port

    return await register_sites(
        settings.federation.top_level,
        prefix,
        settings.site_url,
        identity,
        secret,
        native_port=native_port(settings),
        public_key=load_public_key(settings),
    )


def cmd_federation_join(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _migrate_if_asked(settings)
    secret = read_secret_file(args.secret_file)
    top = asyncio.run(_join(settings, args.prefix, secret))
    print(f"{args.prefix} homed here and delegated to {settings.site_url} at {top}")
    return 0


def cmd_prefix_list(args: argparse.Namespace) -> int:
    for prefix in asyncio.run(_prefix_list(_settings(args))):
        print(prefix)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from nodes.http.server import metrics_directory
    from nodes.metrics import importing
    from registry.importer import ImportReport, run_import

    settings = _settings(args)
    _migrate_if_asked(settings)
    report = ImportReport()
    # The node serving this data directory shows the import's progress in its /metrics.
    with importing(metrics_directory(settings), report):
        code = run_import(settings, Path(args.file), fmt=args.format, report=report)
    if code != 2 and settings.stats.enabled:
        # Imported handles are not counted as they are written: count the totals once more.
        asyncio.run(recount(settings.database_url))
    return code


def cmd_site_keygen(args: argparse.Namespace) -> int:
    from nodes.handle.site import generate_key

    settings = _settings(args)
    path = settings.site_key_path
    try:
        public = generate_key(path, overwrite=args.force)
    except FileExistsError as error:
        print(f"idis: {error}", file=sys.stderr)
        return 1
    print(f"site key written to {path}; its public half (HS_SITE publicKey):")
    print(json.dumps(public))


def cmd_dns(args: argparse.Namespace) -> int:
    """``idis dns name HANDLE`` and ``idis dns handle NAME``: the mapping both ways."""
    from resolver.codecs.dns_names import NoDnsName, NotAnIdentifier, dns_name, handle_of

    zone = args.zone or _settings(args).dns_zone
    try:
        if args.dns_command == "name":
            print(dns_name(args.text, zone))
            return 0
        key = handle_of(args.text, zone)
    except (NoDnsName, NotAnIdentifier, ValueError) as error:
        print(f"idis: {error}", file=sys.stderr)
        return 1
    if key is None:
        print(f"idis: {args.text} names no identifier under {zone}", file=sys.stderr)
        return 1
    print(key)
    return 0


def cmd_secret_new(args: argparse.Namespace) -> int:
    from registry.secrets import generate_secret

    print(generate_secret())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from nodes.demo import run_demo
    from nodes.national.demo import run_national

    if args.state:  # the national tier for drills, until interrupted
        return run_national(Console(highlight=False), once=False, state_file=Path(args.state))
    code = run_demo(once=args.once)
    if args.once and code == 0:  # then the national tier: kill its leader site, take over
        code = run_national(Console(highlight=False), once=True, state_file=None)
    return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("idis")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help says its default, unless there is none to say (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ``idis`` parser; every subcommand's parser is one too (argparse makes them by type)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="idis",
        description="Industrial Internet identifier resolution (Handle System compatible).",
    )
    top.add_argument("--version", action="version", version=f"idis {_version()}")
    # Not required: `idis` alone prints this help (main) rather than a usage error.
    commands = top.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run a node")
    serve.add_argument(
        "--role",
        choices=["top-level", "dr", "secondary", "enterprise", "recursive"],
        help="the node's role (IDIS_ROLE; default: secondary)",
    )
    serve.add_argument("--http", help="HOST:PORT to listen on (IDIS_HTTP)")
    serve.add_argument("--workers", type=int, help="worker processes (IDIS_WORKERS)")
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser("migrate", help="upgrade (or downgrade) the database schema")
    migrate.add_argument(
        "direction",
        nargs="?",
        choices=["upgrade", "downgrade"],
        default="upgrade",
        help="which way to move the schema",
    )
    migrate.add_argument(
        "revision", nargs="?", help="Alembic revision to reach (default: head; downgrade: -1)"
    )
    migrate.set_defaults(run=cmd_migrate)

    prefix = commands.add_parser("prefix", help="prefixes homed on this node")
    prefix_commands = prefix.add_subparsers(dest="prefix_command", required=True)
    init = prefix_commands.add_parser("init", help="home a prefix and create PREFIX/ADMIN")
    init.add_argument("prefix", help="the prefix to home, e.g. 88.100.1")
    init.add_argument(
        "--secret-file",
        help="read the administrator's secret from this file (default: generate one and print"
        " it once; `idis secret new > FILE` makes one)",
    )
    init.set_defaults(run=cmd_prefix_init)
    listing = prefix_commands.add_parser("list", help="list homed prefixes")
    listing.set_defaults(run=cmd_prefix_list)
    allocate = prefix_commands.add_parser(
        "allocate", help="(top level) create 0.NA/PREFIX for a prefix delegated to another node"
    )
    allocate.add_argument("prefix", help="the prefix to delegate, e.g. 88.100")
    allocate.add_argument("--secret-file", help="the holder's secret (default: generate one)")
    allocate.set_defaults(run=cmd_prefix_allocate)

    federation = commands.add_parser("federation", help="federating with the top level")
    federation_commands = federation.add_subparsers(dest="federation_command", required=True)
    join = federation_commands.add_parser(
        "join", help="home PREFIX here and register this node's site for it at the top level"
    )
    join.add_argument("prefix", help="the prefix allocated to this node, e.g. 88.100")
    join.add_argument("--secret-file", required=True, help="the secret of 300:0.NA/PREFIX")
    join.set_defaults(run=cmd_federation_join)

    site = commands.add_parser("site", help="this node's Handle site")
    site_commands = site.add_subparsers(dest="site_command", required=True)
    keygen = site_commands.add_parser(
        "keygen", help="generate the site's RSA key (IDIS_HANDLE_KEY_FILE), outside the database"
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing key")
    keygen.set_defaults(run=cmd_site_keygen)

    secret = commands.add_parser("secret", help="secrets for administrators and holders")
    secret_commands = secret.add_subparsers(dest="secret_command", required=True)
    new = secret_commands.add_parser(
        "new", help="print a new random secret (strong enough for every --secret-file)"
    )
    new.set_defaults(run=cmd_secret_new)

    # Enterprise prefix applications, over a node's HTTP API (nodes/enterprise_cli.py).
    add_enterprise_commands(commands)

    load = commands.add_parser("import", help="bulk-load identifiers from JSONL or CSV")
    load.add_argument(
        "file", help="records to load; - reads standard input (format: README, Importing)"
    )
    load.add_argument(
        "--format",
        choices=["jsonl", "csv"],
        help="the file's format (default: from its name, .jsonl/.ndjson or .csv; - is JSONL)",
    )
    load.set_defaults(run=cmd_import)

    dns = commands.add_parser("dns", help="identifiers as DNS names (IDIS_DNS_ZONE)")
    dns_commands = dns.add_subparsers(dest="dns_command", required=True)
    for command, what, help_text in (
        ("name", "handle", "print the DNS name of an identifier"),
        ("handle", "name", "print the identifier a DNS name stands for"),
    ):
        sub = dns_commands.add_parser(command, help=help_text)
        sub.add_argument("text", metavar=what.upper(), help=f"the {what} to map")
        sub.add_argument("--zone", help="the zone (default: IDIS_DNS_ZONE)")
        sub.set_defaults(run=cmd_dns)

    demo = commands.add_parser("demo", help="run a demonstration on the embedded default")
    demo.add_argument("--once", action="store_true", help="run the steps, report, exit")
    demo.add_argument(
        "--state",
        metavar="FILE",
        help="run the national tier; once ready write its sites, pids and admin as JSON to FILE",
    )
    demo.set_defaults(run=cmd_demo)

    # The national tier's Patroni cluster (nodes/national/cli.py).
    add_national_commands(commands)
    # API tokens (nodes/token_cli.py).
    add_token_commands(commands)
    # National statistics (nodes/stats/cli.py).
    add_stats_commands(commands)

    # Load testing and the benchmark suite (nodes/loadtest_cli.py, the loadtests package).
    add_loadtest_commands(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if getattr(args, "run", None) is None:
        top.print_help()
        return 0
    try:
        code: int = args.run(args)
    except SettingsError as error:
        print(f"idis: {error}", file=sys.stderr)
        return 2
    except HandleError as error:
        print(f"idis: {error.message} (response code {error.code})", file=sys.stderr)
        return 1
    except (OSError, SQLAlchemyError) as error:  # the database (or a file) is out of reach
        print(f"idis: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
