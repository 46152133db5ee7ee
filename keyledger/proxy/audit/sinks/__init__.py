"""Remote copies of the audit journal: S3 with Object Lock, CloudWatch Logs, stdout.

Each configured sink gets a :class:`~.shipper.Shipper` that copies the journal's durable
events from a persisted cursor; see :mod:`.base` for what a sink promises.
"""

from __future__ import annotations

from keyledger.proxy.audit.sinks.base import Batch, BatchLimits, Sink, SinkError, SinkMisconfigured
from keyledger.proxy.audit.sinks.shipper import Shipper, ShipperStatus, ShippingSettings
from keyledger.proxy.config import (
    CloudWatchSinkConfig,
    S3SinkConfig,
    ShippingConfig,
    SinkConfig,
    StdoutSinkConfig,
)

__all__ = [
    "Batch",
    "BatchLimits",
    "Shipper",
    "ShipperStatus",
    "ShippingSettings",
    "Sink",
    "SinkError",
    "SinkMisconfigured",
    "make_sink",
    "shipping_settings",
]


def make_sink(config: SinkConfig, *, chain: str) -> Sink:
    """The sink ``config`` describes, for the chain this process writes."""
    if isinstance(config, S3SinkConfig):
        from keyledger.proxy.audit.sinks.s3 import S3Sink

        return S3Sink(config)
    if isinstance(config, CloudWatchSinkConfig):
        from keyledger.proxy.audit.sinks.cloudwatch import CloudWatchSink

        return CloudWatchSink(config, stream=chain)
    assert isinstance(config, StdoutSinkConfig)
    from keyledger.proxy.audit.sinks.stdout import StdoutSink

    return StdoutSink(config)


def shipping_settings(shipping: ShippingConfig, sink: SinkConfig) -> ShippingSettings:
    return ShippingSettings(
        max_wait_s=sink.batch.max_wait_s,
        retry_min_s=shipping.retry_min_s,
        retry_max_s=shipping.retry_max_s,
        lag_alarm_events=shipping.lag_alarm_events,
        lag_alarm_s=shipping.lag_alarm_s,
        drain_s=shipping.drain_s,
    )
