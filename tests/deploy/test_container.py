"""deploy/container: the image an operator runs read-only, as a non-root user."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import CONTAINER, ROOT, DeployTools, load_healthcheck, run

DOCKERFILE = CONTAINER / "Dockerfile"
DOCKERIGNORE = CONTAINER / "Dockerfile.dockerignore"
BASE_IMAGE = re.compile(r"python:3\.11\.\d+-slim-bookworm")


# -- a small Dockerfile reader ------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") and not pending:
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not line and not pending:
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        found.append((keyword.upper(), args.strip()))
        pending = ""
    return found


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, each list starting with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def args_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


@pytest.fixture(scope="module")
def dockerfile() -> list[list[tuple[str, str]]]:
    return stages(DOCKERFILE.read_text(encoding="utf-8"))


# -- a .dockerignore matcher (Docker's rules: last match wins, a parent's match counts) ---


def _pattern(text: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(text):
        if text.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif text.startswith("**", i):
            out += ".*"
            i += 2
        elif text[i] == "*":
            out += "[^/]*"
            i += 1
        elif text[i] == "?":
            out += "[^/]"
            i += 1
        elif text[i] == "[":
            end = text.index("]", i)
            out += text[i : end + 1]
            i = end + 1
        else:
            out += re.escape(text[i])
            i += 1
    return re.compile(out)


def ignore_rules(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    return rules


def is_ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def context_files() -> list[str]:
    """The files a `docker build .` at the repository root would send, ignore file applied."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    ).stdout.decode()
    rules = ignore_rules(DOCKERIGNORE)
    return sorted(
        name
        for name in listed.split("\0")
        if name and (ROOT / name).is_file() and not is_ignored(name, rules)
    )


# -- the Dockerfile -----------------------------------------------------------------------


def test_hadolint_reports_nothing(tools: DeployTools) -> None:
    """hadolint, every rule at every severity, finds nothing in the Dockerfile."""
    result = run([tools.hadolint, "--no-color", "--format", "json", DOCKERFILE])
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_hadolint_does_flag_a_careless_dockerfile(tools: DeployTools, tmp_path: Path) -> None:
    """The linter really runs: an unpinned base and an apt-get without pins are reported."""
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = run([tools.hadolint, "--no-color", "--format", "json", careless])
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3008"} <= codes
    assert result.returncode != 0


def test_multi_stage_on_one_pinned_slim_base(dockerfile: list[list[tuple[str, str]]]) -> None:
    """A build stage makes the venv; the runtime starts again from the same exact tag."""
    assert len(dockerfile) == 2
    build_from = args_of(dockerfile[0], "FROM")[0].split()
    runtime_from = args_of(dockerfile[1], "FROM")[0].split()
    assert BASE_IMAGE.fullmatch(build_from[0]), build_from
    assert [word.lower() for word in build_from[1:]] == ["as", "build"]
    assert runtime_from == [build_from[0]]
    runtime_copies = args_of(dockerfile[1], "COPY")
    assert "--from=build /opt/keyledger /opt/keyledger" in runtime_copies
    # The project is installed from the build context, not fetched by name.
    build_runs = " ".join(args_of(dockerfile[0], "RUN"))
    assert "install" in build_runs
    assert re.search(r"install [^&]*\.(\s|$)", build_runs), build_runs


def test_runtime_runs_as_a_numeric_non_root_user(dockerfile: list[list[tuple[str, str]]]) -> None:
    """USER is numeric (runAsNonRoot can check it) and owns only the state volume."""
    runtime = dockerfile[1]
    users = args_of(runtime, "USER")
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit()
    assert int(uid) >= 1000
    assert gid.isdigit()
    assert int(gid) >= 1000
    runs = " ".join(args_of(runtime, "RUN"))
    assert f"--uid {uid}" in runs
    assert re.findall(r"chown (\S+) (\S+)", runs) == [(f"{uid}:{gid}", "/var/lib/keyledger")]
    assert args_of(runtime, "VOLUME") == ['["/var/lib/keyledger"]']
    assert args_of(runtime, "WORKDIR") == ["/var/lib/keyledger"]
    # Nothing writes bytecode at run time: the root file system is read-only.
    env = " ".join(args_of(runtime, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "--compile" in " ".join(args_of(dockerfile[0], "RUN"))


def test_ports_entrypoint_and_health_check(dockerfile: list[list[tuple[str, str]]]) -> None:
    """EXPOSE 8080 9090, ENTRYPOINT keyledger, a HEALTHCHECK on /healthz without curl."""
    runtime = dockerfile[1]
    assert args_of(runtime, "EXPOSE") == ["8080 9090"]
    assert [json.loads(a) for a in args_of(runtime, "ENTRYPOINT")] == [["keyledger"]]
    assert [json.loads(a) for a in args_of(runtime, "CMD")] == [
        ["serve", "--config", "/etc/keyledger/config.yaml"]
    ]
    assert args_of(runtime, "STOPSIGNAL") == ["SIGTERM"]
    (check,) = args_of(runtime, "HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert json.loads(command) == ["/opt/keyledger/bin/python", "/opt/keyledger/healthcheck.py"]
    assert "--timeout=" in options
    assert "--interval=" in options
    assert "deploy/container/healthcheck.py /opt/keyledger/healthcheck.py" in args_of(
        runtime, "COPY"
    )
    everything = DOCKERFILE.read_text(encoding="utf-8")
    assert "curl" not in " ".join(args_of(runtime, "RUN"))
    assert "wget" not in everything


# -- the build context --------------------------------------------------------------------


def test_ignore_file_sends_only_what_the_build_needs() -> None:
    """Every COPY source is in the context; repository state, venvs and keys are not."""
    rules = ignore_rules(DOCKERIGNORE)
    for stage in stages(DOCKERFILE.read_text(encoding="utf-8")):
        for copy in args_of(stage, "COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = copy.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not is_ignored(source.rstrip("/"), rules), source
    for secret_or_bulky in (
        ".git/config",
        ".venv/bin/python",
        ".venv-deploy/tools/bin/hadolint",
        "var/keys/checkpoint.key",
        "var/audit/dev.000000000001.jsonl",
        "tests/conftest.py",
        "bench/proxy_overhead.py",
        "keyledger/__pycache__/cli.cpython-311.pyc",
        "deploy/kubernetes/secret.example.yaml",
        "deploy/systemd/keyledger.env",
    ):
        assert is_ignored(secret_or_bulky, rules), secret_or_bulky
    assert not is_ignored("keyledger/policies/examples/demo/demo.yaml", rules)


def test_the_classic_builders_ignore_file_matches() -> None:
    """The repository root's .dockerignore (read by the classic builder) has the same rules
    as the Dockerfile's own (read by BuildKit): either builder sends the same context."""

    def rules(path: Path) -> list[str]:
        lines = (line.strip() for line in path.read_text().splitlines())
        return [line for line in lines if line and not line.startswith("#")]

    assert rules(ROOT / ".dockerignore") == rules(DOCKERIGNORE)
    assert rules(DOCKERIGNORE)[0] == "*"  # everything is left out unless named


def test_the_context_builds_a_working_wheel(tools: DeployTools, tmp_path: Path) -> None:
    """What the build stage does, from exactly the files the ignore file lets through."""
    context = tmp_path / "context"
    for name in context_files():
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    assert (context / "deploy/container/healthcheck.py").is_file()
    assert not (context / "tests").exists()
    result = run(
        [
            tools.tools_python,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            tmp_path / "dist",
            context,
        ],
        timeout=180,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("keyledger-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "keyledger/cli.py" in names
    assert "keyledger/policies/examples/demo/demo.yaml" in names
    assert "keyledger/policies/policy.schema.json" in names
    assert re.search(r"^keyledger\s*=\s*keyledger\.cli:main$", scripts, re.MULTILINE), scripts


# -- the health check ---------------------------------------------------------------------


class _Status(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[tuple[str, type[_Status]]]:
    handler = type("Handler", (_Status,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz", handler
    finally:
        server.shutdown()
        server.server_close()


def test_health_check_exit_status_follows_healthz(
    status_server: tuple[str, type[_Status]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 0 on 200; 1 on any other status, and 1 when nothing answers at all."""
    url, handler = status_server
    healthcheck = load_healthcheck()
    monkeypatch.setenv("KEYLEDGER_HEALTHCHECK_URL", url)
    assert healthcheck.main() == 0
    handler.status = 503
    assert healthcheck.main() == 1
    monkeypatch.setenv("KEYLEDGER_HEALTHCHECK_URL", url.replace("/healthz", "/nothing"))
    assert healthcheck.main() == 1
    monkeypatch.delenv("KEYLEDGER_HEALTHCHECK_URL")
    monkeypatch.setattr(healthcheck, "DEFAULT_URLS", ("http://127.0.0.1:9/healthz",))
    assert healthcheck.main() == 1


def test_health_check_tries_plain_http_then_tls(
    status_server: tuple[str, type[_Status]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset, it tries http:// then https://; a listener that answers either one counts."""
    url, _ = status_server
    healthcheck = load_healthcheck()
    monkeypatch.delenv("KEYLEDGER_HEALTHCHECK_URL", raising=False)
    monkeypatch.setattr(
        healthcheck, "DEFAULT_URLS", (url.replace("http:", "https:"), "http://127.0.0.1:9/")
    )
    assert healthcheck.main() == 1  # TLS to a plain listener is not an answer
    monkeypatch.setattr(healthcheck, "DEFAULT_URLS", (url.replace("http:", "https:"), url))
    assert healthcheck.main() == 0
    defaults = load_healthcheck().DEFAULT_URLS
    assert defaults == ("http://127.0.0.1:9090/healthz", "https://127.0.0.1:9090/healthz")
