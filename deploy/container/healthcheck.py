"""The container's HEALTHCHECK: exit 0 when keyledger's admin API answers GET /healthz.

/healthz needs no token and answers 200 while the process is alive. The admin API speaks
TLS when the config has tls.cert/tls.key and listens off loopback, plain HTTP otherwise, so
this tries both on 127.0.0.1:9090 unless KEYLEDGER_HEALTHCHECK_URL names the URL. Only the
standard library: the slim image has no curl.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_URLS = ("http://127.0.0.1:9090/healthz", "https://127.0.0.1:9090/healthz")
TIMEOUT_S = 4.0


def probe(url: str) -> int | None:
    """The HTTP status ``url`` answers with, or None when nothing answered HTTP."""
    # A liveness probe of our own process: the certificate is the data plane's, issued for
    # the service name, not for 127.0.0.1 (kubelet's HTTPS probes skip verification too).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as reply:  # noqa: S310
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError, http.client.HTTPException):
        return None


def main() -> int:
    configured = os.environ.get("KEYLEDGER_HEALTHCHECK_URL")
    for url in (configured,) if configured else DEFAULT_URLS:
        status = probe(url)
        if status is not None:
            print(f"{url}: HTTP {status}")
            return 0 if status == 200 else 1
    print("keyledger's admin API does not answer (is admin.listen 0.0.0.0:9090?)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
