"""``keyledger policy check | explain | test | schema``: the platform team's tools.

Each verb reads policy files exactly as the proxy does (same loader, same engine), so what
passes here is what the proxy enforces.
"""

from __future__ import annotations

import argparse
import importlib.resources
import ipaddress
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keyledger.model import Action, SecretRef
from keyledger.policies import (
    Context,
    Explanation,
    PolicyEngine,
    PolicyError,
    PolicySet,
    example_policy_dir,
    load_policy_set,
    principal_of,
)
from keyledger.policies.lint import lint
from keyledger.policies.loader import is_policy_test_file, resolve_test_paths
from keyledger.policies.testing import (
    as_decided,
    default_protocol,
    load_cases,
    parse_moment,
    parse_secret,
    request_attributes,
    run_cases,
)
from keyledger.proxy.config import BACKEND_TYPES, load_config

__all__ = ["add_policy_parser", "parse_attributes"]


def _patterns(args: argparse.Namespace) -> Sequence[str | Path]:
    """The paths named on the command line, else the config's, else the shipped demo."""
    if args.paths:
        return list(args.paths)
    if args.config:
        return load_config(Path(args.config)).policies
    return [example_policy_dir()]


def _policy_patterns(args: argparse.Namespace) -> list[str | Path]:
    """Where the policies are; for `policy test`, the test files named among them are not
    policies (in a config or for the other verbs, a file named is always one)."""
    if not args.paths and not args.config:
        # Said out loud: a CI job that forgot its paths must not pass on our example.
        print(
            f"no PATH or --config given: using the shipped demo set {example_policy_dir()}",
            file=sys.stderr,
        )
    patterns = list(_patterns(args))
    if args.policy_command == "test":
        patterns = [p for p in patterns if not (Path(p).is_file() and is_policy_test_file(Path(p)))]
    return patterns


def _backends(args: argparse.Namespace) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """The backend names policies may use, whether a config named them, and those whose
    names reach policy in lower case."""
    if args.config:
        config = load_config(Path(args.config))
        return tuple(config.backends), True, config.lower_case
    return BACKEND_TYPES, False, ("azure",)


def _print_problems(problems: Sequence[object]) -> None:
    for problem in problems:
        print(problem)


# -- check -------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy_set(_policy_patterns(args))
    except PolicyError as exc:
        _print_problems(exc.problems)
        print(f"{len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    inventory = _read_inventory(Path(args.inventory)) if args.inventory else None
    backends, configured, lower_case = _backends(args)
    findings = lint(
        policy,
        backends=backends,
        inventory=inventory,
        configured=configured,
        lower_case=lower_case,
    )
    if findings:
        _print_problems(findings)
        print(f"{len(findings)} problem(s)", file=sys.stderr)
        return 1
    rules = sum(len(r.rules) for r in policy.roles.values())
    print(
        f"ok: {len(policy.files)} file(s), {len(policy.roles)} role(s), {rules} rule(s), "
        f"{len(policy.bindings)} binding(s); policy hash {policy.hash}"
    )
    return 0


def _read_inventory(path: Path) -> set[SecretRef]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the inventory {path}: {exc.strerror}") from None
    refs = set()
    for number, line in enumerate(text.splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                refs.add(parse_secret(text))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
    return refs


# -- explain -----------------------------------------------------------------------------


def cmd_explain(args: argparse.Namespace) -> int:
    policy = _load(args)
    if policy is None:
        return 1
    attributes = parse_attributes(args.attr)
    if args.source_ip is not None:
        ipaddress.ip_address(args.source_ip)  # a typo must not read as "not in network"
    secret = parse_secret(args.secret)
    protocol = args.protocol or default_protocol(secret.backend)
    request = request_attributes(
        Action(args.action),
        protocol=protocol,
        operation=args.operation,
        version_stage=args.version_stage,
    )
    secret = as_decided(secret, protocol)  # Key Vault's names reach policy in lower case
    ctx = Context(
        source_ip=args.source_ip,
        at=parse_moment(args.at) if args.at else datetime.now(UTC),
        request=request,
    )
    principal = principal_of(args.principal, args.group or (), attributes)
    explanation = PolicyEngine(policy).explain(principal, Action(args.action), secret, ctx)
    if args.json:
        print(json.dumps(_explanation_json(explanation, args, ctx, secret), indent=2))
    else:
        _print_explanation(explanation, args, ctx, secret)
    return 0 if explanation.decision.allowed else 3


def parse_attributes(texts: Sequence[str] | None) -> dict[str, str]:
    """``--attr K=V`` options (identity create, policy explain) as a mapping."""
    attributes = {}
    for text in texts or ():
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ValueError(f"--attr {text!r} must be written name=value")
        attributes[key] = value
    return attributes


def _print_explanation(
    ex: Explanation, args: argparse.Namespace, ctx: Context, secret: SecretRef
) -> None:
    d = ex.decision
    print(f"{d.effect.value.upper()}  {args.action} {secret}  for {args.principal}")
    if d.rule is not None:
        deciding = next(v.rule for v in ex.verdicts if v.rule.id == d.rule)
        print(f"  decided by  rule {d.rule} ({deciding.source})")
    else:
        print("  decided by  default deny: no rule allows it")
    print(f"  policy      {d.policy_hash}")
    print(f"  at          {ctx.moment().isoformat()}  from {ctx.source_ip or '(no source ip)'}")
    print(f"  groups      {', '.join(ex.groups) or '(none)'}")
    roles = ", ".join(f"{role} (via {via})" for role, via in ex.roles)
    print(f"  roles       {roles or '(none: no binding names this principal or its groups)'}")
    if not ex.verdicts:
        return
    print("rules considered, in order (+ applies, - does not):")
    width = max(len(v.rule.id) for v in ex.verdicts)
    for v in ex.verdicts:
        mark = "+" if v.applies else "-"
        print(f"  {mark} {v.rule.effect.value:5} {v.rule.id:{width}}  {v.rule.source}")
        for reason in v.reasons:
            print(f"        {reason}")


def _explanation_json(
    ex: Explanation, args: argparse.Namespace, ctx: Context, secret: SecretRef
) -> dict[str, Any]:
    d = ex.decision
    return {
        "effect": d.effect.value,
        "rule": d.rule,
        "reason": d.reason,
        "policy_hash": d.policy_hash,
        "request": {
            "principal": args.principal,
            "groups": list(ex.groups),
            "action": args.action,
            "secret": str(secret),
            "source_ip": ctx.source_ip,
            "at": ctx.moment().isoformat(),
            **ctx.request,
        },
        "roles": [{"role": role, "via": via} for role, via in ex.roles],
        "rules": [
            {
                "id": v.rule.id,
                "role": v.rule.role,
                "effect": v.rule.effect.value,
                "source": v.rule.source,
                "applies": v.applies,
                "reasons": list(v.reasons),
            }
            for v in ex.verdicts
        ],
    }


# -- test --------------------------------------------------------------------------------


def cmd_test(args: argparse.Namespace) -> int:
    policy = _load(args)
    if policy is None:
        return 1
    files = resolve_test_paths(_patterns(args))
    if not files:
        print("no policy test files found (YAML files with 'test' in their name)")
        return 1
    try:
        cases = load_cases(files)
    except PolicyError as exc:
        _print_problems(exc.problems)
        return 1
    results = run_cases(PolicyEngine(policy), cases)
    for result in results:
        case = result.case
        if result.passed:
            if not args.quiet:
                print(f"PASS  {case.where}  {case.name}")
        else:
            print(f"FAIL  {case.where}  {case.name}")
            print(f"      {result.failure}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed ({len(files)} file(s))")
    return 1 if failed else 0


# -- schema ------------------------------------------------------------------------------


def schema_text() -> str:
    return (importlib.resources.files("keyledger.policies") / "policy.schema.json").read_text(
        encoding="utf-8"
    )


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text().rstrip("\n") + "\n")
    return 0


def _load(args: argparse.Namespace) -> PolicySet | None:
    try:
        return load_policy_set(_policy_patterns(args))
    except PolicyError as exc:
        _print_problems(exc.problems)
        return None


# -- parser ------------------------------------------------------------------------------


def _add_sources(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="policy files, folders or globs (default: the config's, else the shipped demo)",
    )
    cmd.add_argument("--config", metavar="FILE", help="take policy paths and backends from it")


def add_policy_parser(sub: Any) -> None:
    policy = sub.add_parser(
        "policy",
        help="check, explain and test policy files",
        description="Work with policy files the way the proxy reads them.",
    )
    verbs = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    check = verbs.add_parser(
        "check",
        help="validate policy files (for CI)",
        description="Load policy files and report every problem as file:line:col: reason: "
        "syntax, unknown actions, keys, roles and groups, bad CIDRs, time zones and times, "
        "duplicate ids, unreachable rules (a role bound to nobody, an allow always "
        "overridden by a deny), and resources matching nothing configured. Exit 1 on any "
        "problem.",
    )
    _add_sources(check)
    check.add_argument(
        "--inventory",
        metavar="FILE",
        help="a list of existing secrets, one backend:name per line; a resource glob "
        "matching none of them is a problem",
    )
    check.set_defaults(func=cmd_check)

    explain = verbs.add_parser(
        "explain",
        help="show how a request would be decided, and why",
        description="Decide one request as the proxy would and print the decision, the "
        "deciding rule, and every rule considered with why it did or did not apply. Exit "
        "0 when allowed, 3 when denied, 1 when the policy does not load.",
    )
    _add_sources(explain)
    explain.add_argument("--principal", required=True, metavar="ID", help="who asks")
    explain.add_argument(
        "--action", required=True, choices=[a.value for a in Action], help="what it does"
    )
    explain.add_argument(
        "--secret", required=True, metavar="BACKEND:NAME", help="e.g. aws:prod/db/password"
    )
    explain.add_argument(
        "--group", action="append", metavar="NAME", help="a group its identity carries"
    )
    explain.add_argument(
        "--attr", action="append", metavar="K=V", help="a principal attribute (OIDC claim)"
    )
    explain.add_argument("--source-ip", metavar="IP", help="the caller's address")
    explain.add_argument("--at", metavar="TIME", help="ISO 8601 moment (default: now)")
    explain.add_argument(
        "--protocol",
        help="request protocol (default: gcp-rest for a gcp or gcp-* backend, azure for an "
        "azure or azure-* one, else aws-json)",
    )
    explain.add_argument(
        "--operation",
        help="request operation (default: the action's usual one, e.g. GetSecretValue, "
        "AccessSecretVersion, GetSecret)",
    )
    explain.add_argument(
        "--version-stage", help="e.g. AWSPREVIOUS (default: AWSCURRENT for a plain read)"
    )
    explain.add_argument("--json", action="store_true", help="print JSON")
    explain.set_defaults(func=cmd_explain)

    test = verbs.add_parser(
        "test",
        help="run the policy test cases kept next to the policies",
        description="Load the policies from PATH (files, folders, globs) and run every case "
        "in the YAML files there with 'test' in their name (payments_test.yaml): "
        "principal, action, secret, context, expected effect and rule. Prints PASS/FAIL "
        "per case; exit 1 on any failure.",
    )
    _add_sources(test)
    test.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    test.set_defaults(func=cmd_test)

    schema = verbs.add_parser(
        "schema",
        help="print the JSON Schema of policy files (for editors)",
        description="Print the JSON Schema of the policy format. Point yaml-language-server "
        "at it with a first line '# yaml-language-server: $schema=policy.schema.json' to "
        "get validation and completion in your editor.",
    )
    schema.set_defaults(func=cmd_schema)
