"""moto's ThreadedMotoServer as a Secrets Manager upstream, seeded with the bench secrets.

Used only for reference figures: moto (werkzeug) closes every connection and serves a few
hundred requests per second, so its own cost hides the proxy's.

    python bench/moto_upstream.py --port 8103      # prints "ready 127.0.0.1:8103"
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from upstream import REGION, SECRETS  # bench/ is on sys.path: this script runs from it

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    try:
        client = boto3.client(
            "secretsmanager",
            endpoint_url=f"http://{args.host}:{args.port}",
            region_name=REGION,
            aws_access_key_id="bench-moto",
            aws_secret_access_key="bench-moto-secret",
        )
        for name, (_, _, value) in SECRETS.items():
            client.create_secret(Name=name, SecretString=value)
        print(f"ready {args.host}:{args.port}", flush=True)
        stop.wait(timeout=3600)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
