"""Secrets travel in responses: keyledger serves TLS, and refuses plain HTTP off loopback.

With tls.listen, HTTPS has a listener of its own beside the plain one (Azure's SDKs send
tokens only over TLS); with tls.client_ca, it asks clients for a certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import signal
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.config
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyledger.devtls import DevTls, client_context, ensure_dev_tls
from tests.conftest import clean_env, journal_events, sm_client
from tests.e2e.test_cli_serve import (
    KEYLEDGER,
    ServedProxy,
    admin_get,
    free_port,
    held_port,
    prepare_config,
    serve_once,
    start_proxy,
)
from tests.e2e.test_dev_mode import wait_for
from tests.e2e.test_workers import wait_ready


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyledger test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_boto3_reads_over_tls(tmp_path: Path, moto_url: str, store: Any) -> None:
    """With tls.cert and tls.key set, boto3 verifies the certificate and reads over HTTPS."""
    cert, key = self_signed(tmp_path)
    store.create_secret(Name="app/tls", SecretString="over-tls")
    served = start_proxy(tmp_path, moto_url, tls=(cert, key))
    try:
        assert served.url.startswith("https://")
        client = served.client(verify=str(cert))
        assert client.get_secret_value(SecretId="app/tls")["SecretString"] == "over-tls"
    finally:
        code, _ = served.stop()
    assert code == 0


def test_plain_http_off_loopback_is_refused(tmp_path: Path) -> None:
    """Listening on a public address without TLS is refused with a clear reason."""
    config = tmp_path / "keyledger.yaml"
    (tmp_path / "p.yaml").write_text("version: 1\n")
    config.write_text(
        yaml.safe_dump(
            {
                "listen": "0.0.0.0:8443",
                "identities": {"path": "identities.json"},
                "policies": ["p.yaml"],
                "backends": {"aws": {"region": "us-east-1"}},
            }
        )
    )
    result = subprocess.run(
        [*KEYLEDGER, "serve", "--config", str(config)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "refusing plain HTTP on 0.0.0.0" in result.stderr
    assert "tls.cert" in result.stderr


# -- HTTPS beside plain HTTP (tls.listen) --------------------------------------------------


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def client_certificate(ca: DevTls, folder: Path) -> tuple[Path, Path]:
    """A client certificate (``app``, clientAuth) signed by the CA of ``ca``: cert, key."""
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(
        (ca.ca_cert.parent / "ca-key.pem").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "client.pem", folder / "client-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_key_pem(key))
    return cert_path, key_path


def tls_section(server: DevTls, port: int, **more: str) -> dict[str, Any]:
    """The config's tls: section, HTTPS on ``port`` with ``server``'s certificate."""
    return {
        "tls": {
            "cert": str(server.cert),
            "key": str(server.key),
            "listen": f"127.0.0.1:{port}",
            **more,
        }
    }


def https_client(served: ServedProxy, port: int, ca: Path, **config: Any) -> Any:
    """boto3 on the HTTPS listener, trusting ``ca`` alone (named: the environment's CA
    bundle variables would otherwise decide)."""
    return sm_client(
        f"https://127.0.0.1:{port}",
        served.key_id,
        served.secret,
        verify=str(ca),
        config=botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"}, **config
        ),
    )


def listening(log: str) -> list[str]:
    """The URLs of keyledger's ``listening`` log lines, in order (workers' lines may share
    a line of the log: each writes its newline apart)."""
    return re.findall(r'\{"url":"([^"]+)"[^{}]*"event":"listening"', log)


TLS_VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


def refusal(port: int, ca: Path, cert: tuple[Path, Path], version: ssl.TLSVersion) -> str:
    """How the server refuses a client presenting ``cert`` over TLS ``version``.

    In TLS 1.2 the handshake fails; in 1.3 the server judges the client's certificate after
    the client finished its side, so the refusal is what the first read meets.
    """
    context = client_context(ca)
    context.minimum_version = context.maximum_version = version
    context.load_cert_chain(*cert)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(
                raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
            ) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                return f"answered {tls.recv(1024)!r}"
        except ssl.SSLError:
            return "refused"


class TestHttpsListener:
    def test_boto3_reads_over_plain_http_and_over_https(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """With tls.listen, the same proxy serves plain HTTP on listen and HTTPS (verified
        against the CA) on tls.listen; both reads are in the journal, and the admin API
        stays plain on loopback."""
        server = ensure_dev_tls(tmp_path / "tls")
        store.create_secret(Name="app/both", SecretString="either-way")
        tls_port = free_port()
        served = start_proxy(tmp_path, moto_url, extra=tls_section(server, tls_port))
        try:
            assert served.url.startswith("http://")
            plain = served.client().get_secret_value(SecretId="app/both")
            https = https_client(served, tls_port, server.ca_cert)
            secure = https.get_secret_value(SecretId="app/both")
            status, _ = admin_get(served, "/readyz")
        finally:
            code, log = served.stop()
        assert code == 0, log
        assert plain["SecretString"] == secure["SecretString"] == "either-way"
        assert status == 200
        assert listening(log) == [f"https://127.0.0.1:{tls_port}", served.url]
        reads = [
            e
            for e in journal_events(served.journal_dir, "access")
            if e["resource"]["secret"] == "app/both"
        ]
        assert [e["outcome"]["status"] for e in reads] == ["success", "success"]

    def test_client_certificates_are_asked_for_and_verified_not_required(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """With tls.client_ca, a client certificate of that CA is accepted, no certificate
        is accepted too, and one of another CA fails the handshake."""
        server = ensure_dev_tls(tmp_path / "tls")
        clients = ensure_dev_tls(tmp_path / "client-ca")
        trusted = client_certificate(clients, tmp_path / "trusted")
        stranger = client_certificate(ensure_dev_tls(tmp_path / "other-ca"), tmp_path / "other")
        store.create_secret(Name="app/mtls", SecretString="asked-for")
        tls_port = free_port()
        extra = tls_section(server, tls_port, client_ca=str(clients.ca_cert))
        served = start_proxy(tmp_path, moto_url, extra=extra)
        try:
            with_cert = https_client(served, tls_port, server.ca_cert, client_cert=trusted)
            without = https_client(served, tls_port, server.ca_cert)
            values = [
                client.get_secret_value(SecretId="app/mtls")["SecretString"]
                for client in (with_cert, without)
            ]
            refused = [refusal(tls_port, server.ca_cert, stranger, v) for v in TLS_VERSIONS]
        finally:
            code, log = served.stop()
        assert code == 0, log
        assert values == ["asked-for", "asked-for"]
        assert refused == ["refused", "refused"]

    def test_two_workers_serve_https(self, tmp_path: Path, moto_url: str, store: Any) -> None:
        """With --workers 2, every worker binds tls.listen too (SO_REUSEPORT)."""
        server = ensure_dev_tls(tmp_path / "tls")
        store.create_secret(Name="app/workers", SecretString="shared-port")
        tls_port = free_port()
        served = start_proxy(
            tmp_path, moto_url, extra=tls_section(server, tls_port), args=("--workers", "2")
        )
        try:
            ready = wait_ready(served)

            def read(_: int) -> str:  # a client each: a new connection each
                client = https_client(served, tls_port, server.ca_cert)
                return str(client.get_secret_value(SecretId="app/workers")["SecretString"])

            with ThreadPoolExecutor(4) as pool:
                values = list(pool.map(read, range(8)))
        finally:
            code, log = served.stop()
        assert code == 0, log
        assert ready["checks"]["workers"]["detail"] == "2 of 2 answer"
        assert values == ["shared-port"] * 8
        assert listening(log).count(f"https://127.0.0.1:{tls_port}") == 2


def test_dev_on_port_0_serves_https_on_the_port_it_bound(tmp_path: Path) -> None:
    """`serve --dev --listen 127.0.0.1:0`: the HTTPS listener takes a free port too, and
    dev.env names that port; boto3 reads there, trusting the demo CA."""
    process = subprocess.Popen(
        [*KEYLEDGER, "serve", "--dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = wait_for(process, "Ctrl-C stops")
        lines = (tmp_path / "var" / "dev.env").read_text().splitlines()
        env = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
        https = env["KEYLEDGER_AZURE_VAULT_URL"]
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", https)
        assert not https.endswith(":0")
        assert https in banner
        client = sm_client(
            https,
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            verify=env["KEYLEDGER_CA"],
        )
        value = client.get_secret_value(SecretId="staging/db/password")["SecretString"]
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0
    assert value == "demo-staging-db-password"


class TestHttpsPortTaken:
    @pytest.mark.parametrize("args", [(), ("--workers", "2")], ids=["one", "workers"])
    def test_a_taken_tls_listen_port_fails_at_once_with_one_line(
        self, tmp_path: Path, moto_url: str, args: tuple[str, ...]
    ) -> None:
        """A taken tls.listen port ends start-up with one line naming tls.listen, exit 2,
        before the journal or any worker starts."""
        server = ensure_dev_tls(tmp_path / "tls")
        with held_port() as holder:
            port = holder.getsockname()[1]
            prepared = prepare_config(tmp_path, moto_url, extra=tls_section(server, port))
            code, err, took = serve_once(prepared.path, prepared.env, *args)
        fix = "is another keyledger running? Choose another port with set tls.listen"
        assert err.splitlines() == [
            f"keyledger: HTTPS listener: cannot listen on 127.0.0.1:{port}: Address already "
            f"in use ({fix})"
        ]
        assert code == 2
        assert not (tmp_path / "audit").exists()
        assert took < 10

    def test_a_taken_dev_tls_listen_port_names_the_option(self, tmp_path: Path) -> None:
        """Under --dev, a taken --tls-listen port fails in one line naming --tls-listen,
        before ./var is made."""
        with held_port() as holder:
            port = holder.getsockname()[1]
            result = subprocess.run(
                [
                    *KEYLEDGER,
                    "serve",
                    "--dev",
                    "--listen",
                    "127.0.0.1:0",
                    "--admin-listen",
                    "127.0.0.1:0",
                    "--tls-listen",
                    f"127.0.0.1:{port}",
                ],
                cwd=tmp_path,
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        fix = "is another keyledger running? Choose another port with --tls-listen HOST:PORT"
        assert result.stderr.splitlines() == [
            f"keyledger: HTTPS listener: cannot listen on 127.0.0.1:{port}: Address already "
            f"in use ({fix})"
        ]
        assert result.returncode == 2
        assert not (tmp_path / "var").exists()

    def test_tls_listen_option_is_for_dev(self, tmp_path: Path, moto_url: str) -> None:
        """--tls-listen with --config points at the setting instead."""
        prepared = prepare_config(tmp_path, moto_url)
        code, err, _ = serve_once(prepared.path, prepared.env, "--tls-listen", "127.0.0.1:0")
        assert code == 2
        assert err == "keyledger: --tls-listen is for --dev; with --config, set tls.listen\n"


@pytest.mark.parametrize(
    ("moved", "refused"),
    [
        ("listen", "keyledger: refusing plain HTTP on 0.0.0.0: secrets travel in responses. "),
        ("admin", "keyledger: refusing a plain-HTTP admin API on 0.0.0.0: the audit stream "),
    ],
    ids=["listen", "admin"],
)
def test_plain_http_beside_tls_listen_stays_on_loopback(
    tmp_path: Path, moto_url: str, moved: str, refused: str
) -> None:
    """With tls.listen, listen and the admin API serve plain HTTP: off loopback they are
    refused as without TLS, and the message says why tls.cert does not cover them."""
    server = ensure_dev_tls(tmp_path / "tls")
    address = f"0.0.0.0:{free_port()}"
    section: dict[str, Any] = {"listen": address}
    if moved == "admin":
        section = {"admin": {"listen": address, "token_file": "keys/admin.token"}}
    extra = {**tls_section(server, free_port()), **section}
    prepared = prepare_config(tmp_path, moto_url, extra=extra)
    code, err, _ = serve_once(prepared.path, prepared.env)
    assert code == 2
    assert err.startswith(refused), err
    assert "With tls.listen" in err
    assert not (tmp_path / "audit").exists()


def test_dev_off_loopback_says_what_a_dev_user_can_do(tmp_path: Path) -> None:
    """`serve --dev --listen 0.0.0.0:PORT` is refused (the demo serves plain HTTP there),
    with the fix a demo user has: a loopback --listen, or --config; nothing is written."""
    result = subprocess.run(
        [
            *KEYLEDGER,
            "serve",
            "--dev",
            "--listen",
            f"0.0.0.0:{free_port()}",
            # Its own free port: by default HTTPS goes 363 above, which may be taken.
            "--tls-listen",
            f"127.0.0.1:{free_port()}",
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "keyledger: refusing plain HTTP on 0.0.0.0: secrets travel in responses, and the "
        "--dev demo serves plain HTTP on --listen: keep it on loopback "
        "(--listen 127.0.0.1:PORT); for more than a demo, use --config"
    )
