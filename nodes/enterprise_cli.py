"""``idis enterprise``: the enterprise prefix workflow from a terminal, over HTTP.

Every command talks to a node's API (``--node URL``), so an operator can drive a remote
secondary node and an enterprise can apply from its own machine::

    idis enterprise apply --node URL 88.100.1 --name "ACME" [--contact C]
                          [--self-hosted SITE_URL] [--secret-file F]
    idis enterprise show --node URL ID
    idis enterprise list --node URL --identity 300:88.100/ADMIN --secret-file F [--status S]
    idis enterprise approve --node URL ID --identity ... --secret-file F
    idis enterprise reject --node URL ID --identity ... --secret-file F [--reason R]

A refusal exits with status 1 and the node's message and response code, as other commands do.
httpx and rich are imported by the commands themselves, so that ``idis`` starts fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from nodes.settings import read_secret_file
from resolver.errors import PeerRefused, UpstreamUnavailable

if TYPE_CHECKING:
    import httpx
    from rich.console import Console

API = "/api/prefix-applications"
TIMEOUT = 30.0
"""Approval waits for the top level; give it time rather than report a false failure."""


def _auth(args: argparse.Namespace) -> httpx.BasicAuth:
    """Handle's Basic credentials for ``--identity`` and ``--secret-file``."""
    from nodes.federation import basic_auth

    return basic_auth(args.identity, read_secret_file(args.secret_file))


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    *,
    auth: httpx.BasicAuth | None = None,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The node's JSON answer; raises its Handle error, or 3 if it cannot be reached."""
    import httpx

    url = args.node.rstrip("/") + API + path
    try:
        response = httpx.request(method, url, json=body, params=params, auth=auth, timeout=TIMEOUT)
        answer = response.json()
    except httpx.HTTPError as error:
        raise UpstreamUnavailable(f"cannot reach {args.node}: {error}") from None
    except ValueError:
        status = response.status_code
        raise UpstreamUnavailable(f"{url} did not answer JSON (HTTP {status})") from None
    if not isinstance(answer, dict) or answer.get("responseCode") != 1:
        answer = answer if isinstance(answer, dict) else {}
        code = int(answer.get("responseCode", 2))
        raise PeerRefused(code, str(answer.get("message", f"HTTP {response.status_code}")))
    return answer


def _console() -> Console:
    from rich.console import Console

    # Piped into a file or another program, a table need not fit a terminal: keep rows whole.
    return Console() if sys.stdout.isatty() else Console(width=160)


def _show(application: dict[str, Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for field in ("id", "prefix", "status", "name", "contact", "hosting", "siteUrl"):
        table.add_row(field, str(application.get(field) or ""))
    table.add_row("secret provided", "yes" if application.get("secretProvided") else "no")
    table.add_row("created", str(application.get("createdAt") or ""))
    if application.get("decidedAt"):
        table.add_row("decided", f"{application['decidedAt']} by {application['decidedBy']}")
    if application.get("reason"):
        table.add_row("reason", str(application["reason"]))
    _console().print(table)


def cmd_apply(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"prefix": args.prefix, "name": args.name}
    if args.contact:
        body["contact"] = args.contact
    if args.self_hosted:
        body["hosting"] = "self-hosted"
        body["siteUrl"] = args.self_hosted
    if args.secret_file:
        body["secret"] = read_secret_file(args.secret_file)
    application = _call(args, "POST", "", body=body)["application"]
    # One plain line first, for scripts: the id is what the applicant needs to follow it.
    print(f"application {application['id']} submitted for {application['prefix']}")
    _show(application, "prefix application")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _show(_call(args, "GET", f"/{quote(args.id, safe='')}")["application"], "prefix application")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    params = {"status": args.status} if args.status else None
    applications = _call(args, "GET", "", auth=_auth(args), params=params)["applications"]
    table = Table(
        title=f"prefix applications ({args.status or 'all'})",
        title_justify="left",
        box=box.SIMPLE,
    )
    # What an operator types back (the id) or sorts by is never shortened; free text folds.
    for column in ("id", "prefix", "status", "created"):
        table.add_column(column, no_wrap=True)
    for column in ("hosting", "name"):  # contact and the rest: ``idis enterprise show``
        table.add_column(column, overflow="fold")
    for a in applications:
        where = a["hosting"] + (f" at {a['siteUrl']}" if a.get("siteUrl") else "")
        created = a["createdAt"].replace("T", " ")[:16]
        table.add_row(a["id"], a["prefix"], a["status"], created, where, a["name"])
    _console().print(table)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    answer = _call(args, "POST", f"/{quote(args.id, safe='')}/approve", auth=_auth(args))
    application = answer["application"]
    print(f"application {application['id']} approved: {application['prefix']} allocated")
    _show(application, "prefix application")
    if answer.get("admin"):
        print(f"administrator: {answer['admin']}")
    if answer.get("secret"):
        print(f"secret (shown once, give it to the enterprise): {answer['secret']}")
    if application["hosting"] == "self-hosted":
        print(f"the enterprise now runs on its node: idis prefix init {application['prefix']}")
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason else None
    path = f"/{quote(args.id, safe='')}/reject"
    application = _call(args, "POST", path, auth=_auth(args), body=body)["application"]
    print(f"application {application['id']} rejected")
    _show(application, "prefix application")
    return 0


def add_enterprise_commands(commands: Any) -> None:
    """Register ``idis enterprise ...`` on the ``idis`` subcommands (an argparse subparsers)."""
    enterprise = commands.add_parser(
        "enterprise", help="enterprise prefix applications (over a node's HTTP API)"
    )
    actions = enterprise.add_subparsers(dest="enterprise_command", required=True)

    def command(name: str, help: str, run: Any, *, operator: bool) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help)
        parser.add_argument("--node", required=True, help="base URL of the secondary node")
        if operator:
            parser.add_argument(
                "--identity", required=True, help="who decides, e.g. 300:88.100/ADMIN"
            )
            parser.add_argument("--secret-file", required=True, help="that identity's secret")
        parser.set_defaults(run=run)
        return parser

    apply = command("apply", "apply for an enterprise prefix", cmd_apply, operator=False)
    apply.add_argument("prefix", help="the prefix applied for, e.g. 88.100.1")
    apply.add_argument("--name", required=True, help="the enterprise's name")
    apply.add_argument("--contact", help="who to contact about the application")
    apply.add_argument(
        "--self-hosted",
        metavar="SITE_URL",
        help="serve the prefix from the enterprise's own node at this base URL",
    )
    apply.add_argument(
        "--secret-file", help="(hosted) the secret PREFIX/ADMIN will have (default: generated)"
    )

    show = command("show", "show one application", cmd_show, operator=False)
    show.add_argument("id", help="the application's ID (from apply or list)")

    listing = command("list", "list the applications you may decide on", cmd_list, operator=True)
    listing.add_argument(
        "--status", choices=["pending", "approved", "rejected"], help="only these (default: all)"
    )

    approve = command("approve", "approve: allocate the prefix", cmd_approve, operator=True)
    approve.add_argument("id", help="the application's ID")

    reject = command("reject", "reject an application", cmd_reject, operator=True)
    reject.add_argument("id", help="the application's ID")
    reject.add_argument("--reason", help="told to the applicant")
