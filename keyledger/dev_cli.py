"""``keyledger dev token``: a workload token from the ``--dev`` demo's OIDC issuer."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_dev_parser"]


def cmd_token(args: argparse.Namespace) -> int:
    from keyledger.policy_cli import parse_attributes
    from keyledger.proxy.config import parse_duration
    from keyledger.proxy.dev_issuer import sign_token

    ttl_s = parse_duration(args.ttl)
    if not 1 <= ttl_s <= 24 * 3600:
        raise ValueError("--ttl: expected 1s to 24h")
    claims = parse_attributes(args.claim)
    print(sign_token(Path(args.var), subject=args.subject, claims=claims, ttl_s=ttl_s))
    return 0


def add_dev_parser(sub: Any) -> None:
    dev = sub.add_parser(
        "dev",
        help="tools for the --dev demo",
        description="Tools for the `keyledger serve --dev` demo, run in the folder it ran in.",
    )
    verbs = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    token = verbs.add_parser(
        "token",
        help="print a workload token from the demo's OIDC issuer",
        description="Print a signed OIDC token (a JWT) from the demo's issuer, which `serve "
        "--dev` trusts, as GitHub Actions or a Kubernetes cluster would give a workload. "
        "Use it as a bearer token (Google's and Azure's protocols): the caller is "
        "--subject, with the claims given as attributes policies can condition on.",
    )
    token.add_argument("--subject", required=True, help="the caller (the token's sub)")
    token.add_argument(
        "--claim",
        action="append",
        metavar="K=V",
        help="a claim (repository, ref, environment, namespace, service_account, team "
        "become attributes); repeatable",
    )
    token.add_argument("--ttl", default="1h", help="how long it is valid (default 1h)")
    token.add_argument("--var", default="var", metavar="DIR", help="the --dev state folder")
    token.set_defaults(func=cmd_token)
