"""``idis national status`` and ``idis national switchover``: the national tier's registry as
Patroni runs it, seen and moved through Patroni's REST API (idis itself elects nothing)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _apis(args: argparse.Namespace) -> list[str]:
    from nodes.settings import SettingsError, load_settings

    if args.patroni:
        urls = [url.strip() for url in args.patroni.split(",") if url.strip()]
    else:
        urls = load_settings().national.patroni
    if not urls:
        raise SettingsError("name a Patroni REST API with --patroni or IDIS_NATIONAL__PATRONI")
    return urls


def cmd_status(args: argparse.Namespace) -> int:
    from nodes.national import patroni

    try:
        members = patroni.cluster(_apis(args))
    except patroni.PatroniError as error:
        print(f"idis: {error}", file=sys.stderr)
        return 1
    for member in members:
        lag = "" if member.lag is None else f" lag {member.lag} B"
        print(f"{member.name:<16} {member.role:<13} {member.state}{lag}")
    return 0


def cmd_switchover(args: argparse.Namespace) -> int:
    from nodes.national import patroni

    try:
        old, new = patroni.switchover(_apis(args), args.candidate)
    except patroni.PatroniError as error:
        print(f"idis: {error}", file=sys.stderr)
        return 1
    print(f"switched over: {old} -> {new}")
    return 0


def add_national_commands(commands: Any) -> None:
    national = commands.add_parser("national", help="the national tier's Patroni cluster")
    national.add_argument(
        "--patroni", help="Patroni REST API URLs, comma-separated (default: IDIS_NATIONAL__PATRONI)"
    )
    sub = national.add_subparsers(dest="national_command", required=True)
    status = sub.add_parser("status", help="each member's role, state and lag")
    status.set_defaults(run=cmd_status)
    switchover = sub.add_parser(
        "switchover",
        help="move the leader (planned maintenance; default: to a synchronous standby)",
    )
    switchover.add_argument("--candidate", help="the member to lead next")
    switchover.set_defaults(run=cmd_switchover)
