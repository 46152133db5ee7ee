"""boto3 clients for the AWS sinks, and their errors in the sinks' terms.

The shippers are not on the request path, so plain boto3 in a worker thread is the right
tool here (the data plane signs its own requests for speed; a sink sends one call per
batch). botocore retries a throttled call twice itself; the shipper's backoff does the rest.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from keyledger.proxy.audit.sinks.base import SinkError, SinkMisconfigured
from keyledger.proxy.config import CloudWatchSinkConfig, S3SinkConfig

__all__ = ["LazyClient", "client_for", "error_code", "sink_error"]

# botocore reads AWS_ENDPOINT_URL_<service id>, which for CloudWatch Logs is
# AWS_ENDPOINT_URL_CLOUDWATCH_LOGS; the shorter name, after the `aws logs` command, is
# honoured too when that one is not set.
_ENDPOINT_ALIASES = {"logs": ("AWS_ENDPOINT_URL_LOGS", "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS")}

# Codes that will not go away by retrying: an operator has to grant or create something.
_MISCONFIGURED = {
    "AccessDenied",
    "AccessDeniedException",
    "NoSuchBucket",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
}


def client_for(
    service: str,
    *,
    region: str | None,
    endpoint_url: str | None,
    profile: str | None,
    static_credentials: tuple[str, str] | None = None,
    read_timeout_s: float = 30.0,
) -> Any:
    if endpoint_url is None and service in _ENDPOINT_ALIASES:
        alias, official = _ENDPOINT_ALIASES[service]
        if not os.environ.get(official):
            endpoint_url = os.environ.get(alias) or None
    session = boto3.session.Session(profile_name=profile)
    keys: dict[str, str] = {}
    if static_credentials is not None:
        keys = {
            "aws_access_key_id": static_credentials[0],
            "aws_secret_access_key": static_credentials[1],
        }
    return session.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,  # None: AWS_ENDPOINT_URL_<SERVICE>, or AWS itself
        config=BotoConfig(
            connect_timeout=5,
            read_timeout=read_timeout_s,
            retries={"mode": "standard", "max_attempts": 3},
        ),
        **keys,
    )


class LazyClient:
    """The sink's boto3 client, made on first use, on the sink's thread (it reads files)."""

    def __init__(self, service: str, config: S3SinkConfig | CloudWatchSinkConfig) -> None:
        self._service = service
        self._config = config
        self._client: Any = None

    def __call__(self) -> Any:
        if self._client is None:
            c = self._config
            self._client = client_for(
                self._service,
                region=c.region,
                endpoint_url=c.endpoint_url,
                profile=c.profile,
                static_credentials=c.static_credentials,
            )
        return self._client


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def sink_error(exc: Exception, what: str) -> SinkError:
    """``exc`` from boto3 as a SinkError that says what failed, without a traceback."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or code
        kind = SinkMisconfigured if code in _MISCONFIGURED else SinkError
        return kind(f"{what}: {code}: {message}")
    if isinstance(exc, BotoCoreError):
        return SinkError(f"{what}: {exc}")
    return SinkError(f"{what}: {type(exc).__name__}: {exc}")
