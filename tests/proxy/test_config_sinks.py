"""audit.sinks and audit.shipping: remote copies of the journal, and how they are shipped."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from keyledger.proxy.audit.sinks import make_sink, shipping_settings
from keyledger.proxy.audit.sinks.stdout import StdoutSink
from keyledger.proxy.config import (
    S3_BATCH,
    STDOUT_BATCH,
    CloudWatchSinkConfig,
    Config,
    ConfigError,
    S3SinkConfig,
    ShippingConfig,
    SinkBatch,
    StdoutSinkConfig,
    load_config,
    parse_config,
)
from tests.conftest import write_proxy_files


@pytest.fixture
def base_doc(tmp_path: Path) -> dict[str, Any]:
    return write_proxy_files(tmp_path)


def parse(tmp_path: Path, doc: dict[str, Any], **audit: Any) -> Config:
    doc["audit"].update(audit)
    return parse_config(doc, base=tmp_path, source="test")


def fails(tmp_path: Path, doc: dict[str, Any], **audit: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, doc, **audit)
    return str(caught.value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "keyledger.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


class TestSinkDefaults:
    def test_no_sinks_by_default(self, tmp_path: Path, base_doc: dict[str, Any]) -> None:
        """Without audit.sinks nothing is shipped, and shipping has its documented defaults."""
        audit = parse(tmp_path, base_doc).audit

        assert audit.sinks == ()
        assert audit.shipping == ShippingConfig(
            retry_min_s=0.5,
            retry_max_s=60.0,
            lag_alarm_events=100_000,
            lag_alarm_s=300.0,
            drain_s=10.0,
        )

    def test_s3_defaults(self, tmp_path: Path, base_doc: dict[str, Any]) -> None:
        """An S3 sink needs only a bucket: named s3, COMPLIANCE lock for 365 days, required."""
        (sink,) = parse(
            tmp_path, base_doc, sinks=[{"type": "s3", "bucket": "audit-bucket"}]
        ).audit.sinks

        assert sink == S3SinkConfig(
            name="s3",
            bucket="audit-bucket",
            prefix="",
            lock_mode="COMPLIANCE",
            retention_days=365,
            require_object_lock=True,
            batch=SinkBatch(max_events=10_000, max_bytes=8 << 20, max_wait_s=10.0),
        )
        assert (sink.region, sink.endpoint_url, sink.profile) == (None, None, None)

    def test_cloudwatch_defaults(self, tmp_path: Path, base_doc: dict[str, Any]) -> None:
        """A CloudWatch sink needs only a log group; its retention is left alone."""
        sinks = [{"type": "cloudwatch", "log_group": "/keyledger/audit"}]
        (sink,) = parse(tmp_path, base_doc, sinks=sinks).audit.sinks

        assert sink == CloudWatchSinkConfig(
            name="cloudwatch",
            log_group="/keyledger/audit",
            retention_days=None,
            batch=SinkBatch(max_events=10_000, max_bytes=1 << 20, max_wait_s=2.0),
        )

    def test_stdout_defaults(self, tmp_path: Path, base_doc: dict[str, Any]) -> None:
        """A stdout sink needs nothing but its type."""
        (sink,) = parse(tmp_path, base_doc, sinks=[{"type": "stdout"}]).audit.sinks

        assert sink == StdoutSinkConfig(
            name="stdout", batch=SinkBatch(max_events=1000, max_bytes=1 << 20, max_wait_s=0.2)
        )
        assert sink.batch == STDOUT_BATCH

    @pytest.mark.parametrize(
        ("prefix", "expected"),
        [
            ("keyledger", "keyledger/"),
            ("keyledger/", "keyledger/"),
            ("/keyledger/prod/", "keyledger/prod/"),
            ("a/b", "a/b/"),
            ("/", ""),
            ("", ""),
        ],
    )
    def test_s3_prefix_is_normalised(
        self, tmp_path: Path, base_doc: dict[str, Any], prefix: str, expected: str
    ) -> None:
        """The S3 prefix is empty or ends in exactly one "/", with no leading "/"."""
        sinks = [{"type": "s3", "bucket": "audit-bucket", "prefix": prefix}]
        (sink,) = parse(tmp_path, base_doc, sinks=sinks).audit.sinks

        assert isinstance(sink, S3SinkConfig)
        assert sink.prefix == expected

    def test_every_setting_is_read(self, tmp_path: Path) -> None:
        """Every sink and shipping setting in a YAML file is read, durations with units."""
        path = write(
            tmp_path,
            """
            policies: [policies/]
            backends:
              aws: {region: eu-west-1}
            audit:
              sinks:
                - type: s3
                  name: archive
                  bucket: keyledger-audit.example
                  prefix: prod
                  region: eu-west-1
                  endpoint_url: http://127.0.0.1:9000
                  profile: audit-writer
                  object_lock: {mode: governance, retention_days: 2555}
                  require_object_lock: false
                  batch: {max_events: 500, max_bytes: 65536, max_wait: 30s}
                - type: cloudwatch
                  name: logs
                  log_group: /keyledger/audit
                  retention_days: 3653
                  batch: {max_wait: 500ms}
                - type: stdout
                  batch: {max_events: 10}
              shipping:
                retry_min: 250ms
                retry_max: 2m
                lag_alarm_events: 5000
                lag_alarm: 10m
                drain: 30s
            """,
        )

        audit = load_config(path).audit

        s3, logs, stdout = audit.sinks
        assert s3 == S3SinkConfig(
            name="archive",
            bucket="keyledger-audit.example",
            prefix="prod/",
            region="eu-west-1",
            endpoint_url="http://127.0.0.1:9000",
            profile="audit-writer",
            lock_mode="GOVERNANCE",
            retention_days=2555,
            require_object_lock=False,
            batch=SinkBatch(max_events=500, max_bytes=65536, max_wait_s=30.0),
        )
        assert logs == CloudWatchSinkConfig(
            name="logs",
            log_group="/keyledger/audit",
            retention_days=3653,
            batch=SinkBatch(max_events=10_000, max_bytes=1 << 20, max_wait_s=0.5),
        )
        assert stdout == StdoutSinkConfig(
            name="stdout", batch=SinkBatch(max_events=10, max_bytes=1 << 20, max_wait_s=0.2)
        )
        assert audit.shipping == ShippingConfig(
            retry_min_s=0.25,
            retry_max_s=120.0,
            lag_alarm_events=5000,
            lag_alarm_s=600.0,
            drain_s=30.0,
        )

    @pytest.mark.parametrize("mode", ["bucket_default", "BUCKET_DEFAULT", "Bucket_Default"])
    def test_bucket_default_lock_mode(
        self, tmp_path: Path, base_doc: dict[str, Any], mode: str
    ) -> None:
        """object_lock.mode bucket_default (any case) leaves retention to the bucket."""
        sinks = [{"type": "s3", "bucket": "audit-bucket", "object_lock": {"mode": mode}}]
        (sink,) = parse(tmp_path, base_doc, sinks=sinks).audit.sinks

        assert isinstance(sink, S3SinkConfig)
        assert sink.lock_mode is None

    def test_named_sinks_of_one_type(self, tmp_path: Path, base_doc: dict[str, Any]) -> None:
        """Two sinks of one type are fine when each has its own name."""
        sinks = [
            {"type": "s3", "name": "eu", "bucket": "audit-eu"},
            {"type": "s3", "name": "us", "bucket": "audit-us"},
        ]

        names = [s.name for s in parse(tmp_path, base_doc, sinks=sinks).audit.sinks]

        assert names == ["eu", "us"]

    def test_batch_limits_may_equal_the_sink_maximum(
        self, tmp_path: Path, base_doc: dict[str, Any]
    ) -> None:
        """The most a sink takes in one call is itself a valid setting, as is max_wait 0."""
        sinks = [
            {
                "type": "cloudwatch",
                "log_group": "g",
                "batch": {"max_events": 10_000, "max_bytes": 1 << 20, "max_wait": 0},
            },
            {"type": "s3", "bucket": "abc", "batch": {"max_events": 1, "max_bytes": 4096}},
        ]

        logs, s3 = parse(tmp_path, base_doc, sinks=sinks).audit.sinks

        assert logs.batch == SinkBatch(max_events=10_000, max_bytes=1 << 20, max_wait_s=0.0)
        assert s3.batch == SinkBatch(max_events=1, max_bytes=4096, max_wait_s=S3_BATCH.max_wait_s)

    def test_shipping_settings_combine_shipping_and_the_sink_batch(
        self, tmp_path: Path, base_doc: dict[str, Any]
    ) -> None:
        """Each shipper waits its own sink's max_wait and retries as audit.shipping says."""
        config = parse(
            tmp_path,
            base_doc,
            sinks=[{"type": "stdout", "batch": {"max_wait": "1s"}}],
            shipping={"retry_min": "1s", "retry_max": "5s", "lag_alarm": "1m", "drain": 3},
        )
        (sink,) = config.audit.sinks

        settings = shipping_settings(config.audit.shipping, sink)

        assert (settings.max_wait_s, settings.retry_min_s, settings.retry_max_s) == (1, 1, 5)
        assert (settings.lag_alarm_s, settings.drain_s) == (60, 3)
        assert settings.lag_alarm_events == 100_000
        assert isinstance(make_sink(sink, chain="test"), StdoutSink)


class TestSinkMistakes:
    @pytest.mark.parametrize(
        ("sinks", "expected"),
        [
            ({"type": "s3"}, "test: audit.sinks: expected a list of sinks (each with a type)"),
            (["s3"], "test: audit.sinks: item 1: expected a mapping with a type"),
            (
                [{"type": "stdout"}, "stdout"],
                "test: audit.sinks: item 2: expected a mapping with a type",
            ),
            (
                [{"type": "kafka"}],
                "test: audit.sinks[0].type: expected one of s3, cloudwatch, stdout",
            ),
            (
                [{"bucket": "audit-bucket"}],
                "test: audit.sinks[0].type: expected one of s3, cloudwatch, stdout",
            ),
            ([{"type": 3}], "test: audit.sinks[0].type: expected str, got int"),
            (
                [{"type": "stdout", "name": "my sink"}],
                "test: audit.sinks[0].name: expected 1-64 letters, digits, '_' or '-'",
            ),
            (
                [{"type": "stdout", "name": "x" * 65}],
                "test: audit.sinks[0].name: expected 1-64 letters, digits, '_' or '-'",
            ),
            (
                [{"type": "stdout"}, {"type": "stdout"}],
                "test: audit.sinks[1].name: two sinks are named 'stdout'; give each a name",
            ),
            (
                [
                    {"type": "s3", "name": "copy", "bucket": "abc"},
                    {"type": "stdout", "name": "copy"},
                ],
                "test: audit.sinks[1].name: two sinks are named 'copy'; give each a name",
            ),
            (
                [{"type": "stdout", "bucket": "abc"}],
                "test: audit.sinks[0].bucket: unknown key",
            ),
            (
                [{"type": "s3", "buckt": "abc"}],
                "test: audit.sinks[0].buckt: unknown key (did you mean 'bucket'?)",
            ),
            (
                [{"type": "cloudwatch", "log_group": "g", "prefix": "p"}],
                "test: audit.sinks[0].prefix: unknown key (did you mean 'profile'?)",
            ),
        ],
    )
    def test_sink_list_mistakes(
        self, tmp_path: Path, base_doc: dict[str, Any], sinks: Any, expected: str
    ) -> None:
        """A malformed sink list, unknown type, bad or duplicate name is named exactly."""
        assert fails(tmp_path, base_doc, sinks=sinks) == expected

    @pytest.mark.parametrize(
        "bucket", ["", "ab", "Audit-Bucket", "audit_bucket", "-audit", "audit-", "a" * 64]
    )
    def test_bad_bucket(self, tmp_path: Path, base_doc: dict[str, Any], bucket: str) -> None:
        """A bucket name S3 would refuse (or none) is refused before start-up."""
        error = fails(tmp_path, base_doc, sinks=[{"type": "s3", "bucket": bucket}])

        assert error == "test: audit.sinks[0].bucket: expected an S3 bucket name"

    def test_missing_bucket(self, tmp_path: Path, base_doc: dict[str, Any]) -> None:
        """An S3 sink without a bucket is refused, naming the bucket key."""
        error = fails(tmp_path, base_doc, sinks=[{"type": "s3"}])

        assert error == "test: audit.sinks[0].bucket: expected an S3 bucket name"

    @pytest.mark.parametrize("log_group", ["", "has space", "a:b", "x" * 513])
    def test_bad_log_group(self, tmp_path: Path, base_doc: dict[str, Any], log_group: str) -> None:
        """A log group name CloudWatch would refuse (or none) is refused before start-up."""
        sinks = [{"type": "cloudwatch", "log_group": log_group}]

        error = fails(tmp_path, base_doc, sinks=sinks)

        assert error == (
            "test: audit.sinks[0].log_group: expected a log group name (e.g. keyledger-audit)"
        )

    @pytest.mark.parametrize("days", [0, 2, 42, 366, 3654, "30"])
    def test_cloudwatch_retention_outside_its_list(
        self, tmp_path: Path, base_doc: dict[str, Any], days: object
    ) -> None:
        """CloudWatch retention_days must be one of the periods CloudWatch accepts."""
        sinks = [{"type": "cloudwatch", "log_group": "g", "retention_days": days}]

        error = fails(tmp_path, base_doc, sinks=sinks)

        assert error.startswith(
            "test: audit.sinks[0].retention_days: CloudWatch accepts only 1, 3, 5, 7, 14, 30,"
        )
        assert error.endswith(", 3288, 3653")

    @pytest.mark.parametrize("days", [1, 7, 365, 3653])
    def test_cloudwatch_retention_in_its_list(
        self, tmp_path: Path, base_doc: dict[str, Any], days: int
    ) -> None:
        """Each period CloudWatch accepts is accepted as it is."""
        sinks = [{"type": "cloudwatch", "log_group": "g", "retention_days": days}]

        (sink,) = parse(tmp_path, base_doc, sinks=sinks).audit.sinks

        assert isinstance(sink, CloudWatchSinkConfig)
        assert sink.retention_days == days

    @pytest.mark.parametrize("days", [True, 30.0])
    def test_cloudwatch_retention_must_be_a_whole_number(
        self, tmp_path: Path, base_doc: dict[str, Any], days: object
    ) -> None:
        """retention_days: true or 30.0 is refused, not sent to CloudWatch as is."""
        sinks = [{"type": "cloudwatch", "log_group": "g", "retention_days": days}]

        assert "audit.sinks[0].retention_days" in fails(tmp_path, base_doc, sinks=sinks)

    @pytest.mark.parametrize(
        ("lock", "expected"),
        [
            (
                {"mode": "strict"},
                "test: audit.sinks[0].object_lock.mode: "
                "expected COMPLIANCE, GOVERNANCE or bucket_default",
            ),
            (
                {"mode": 1},
                "test: audit.sinks[0].object_lock.mode: expected str, got int",
            ),
            (
                {"retention_days": 0},
                "test: audit.sinks[0].object_lock.retention_days: expected 1 to 36500 days",
            ),
            (
                {"retention_days": 36501},
                "test: audit.sinks[0].object_lock.retention_days: expected 1 to 36500 days",
            ),
            (
                {"retention_days": "7y"},
                "test: audit.sinks[0].object_lock.retention_days: expected int, got str",
            ),
            (
                {"days": 30},
                "test: audit.sinks[0].object_lock.days: unknown key",
            ),
        ],
    )
    def test_object_lock_mistakes(
        self, tmp_path: Path, base_doc: dict[str, Any], lock: dict[str, Any], expected: str
    ) -> None:
        """A bad Object Lock mode or retention is named with what would be right."""
        sinks = [{"type": "s3", "bucket": "audit-bucket", "object_lock": lock}]

        assert fails(tmp_path, base_doc, sinks=sinks) == expected

    def test_object_lock_must_be_a_mapping(self, tmp_path: Path, base_doc: dict[str, Any]) -> None:
        """object_lock: COMPLIANCE (not a mapping) is refused."""
        sinks = [{"type": "s3", "bucket": "audit-bucket", "object_lock": "COMPLIANCE"}]

        error = fails(tmp_path, base_doc, sinks=sinks)

        assert error == "test: audit.sinks[0].object_lock: expected a mapping"

    def test_require_object_lock_must_be_a_bool(
        self, tmp_path: Path, base_doc: dict[str, Any]
    ) -> None:
        """require_object_lock: "no" is refused rather than read as true."""
        sinks = [{"type": "s3", "bucket": "audit-bucket", "require_object_lock": "no"}]

        error = fails(tmp_path, base_doc, sinks=sinks)

        assert error == "test: audit.sinks[0].require_object_lock: expected bool, got str"

    @pytest.mark.parametrize(
        ("sink", "batch", "expected"),
        [
            (
                {"type": "s3", "bucket": "abc"},
                {"max_events": 10_001},
                "max_events: expected 1 to 10000",
            ),
            ({"type": "s3", "bucket": "abc"}, {"max_events": 0}, "max_events: expected 1 to 10000"),
            ({"type": "stdout"}, {"max_events": 1001}, "max_events: expected 1 to 1000"),
            (
                {"type": "cloudwatch", "log_group": "g"},
                {"max_events": 10_001},
                "max_events: expected 1 to 10000",
            ),
            (
                {"type": "s3", "bucket": "abc"},
                {"max_bytes": (8 << 20) + 1},
                "max_bytes: expected 4096 to 8388608",
            ),
            (
                {"type": "cloudwatch", "log_group": "g"},
                {"max_bytes": (1 << 20) + 1},
                "max_bytes: expected 4096 to 1048576",
            ),
            ({"type": "stdout"}, {"max_bytes": 4095}, "max_bytes: expected 4096 to 1048576"),
            ({"type": "stdout"}, {"max_wait": "2h"}, "max_wait: expected 0s to 1h"),
            (
                {"type": "stdout"},
                {"max_wait": "soon"},
                "max_wait: 'soon' is not a duration (e.g. 60s, 15m, 24h, 7d)",
            ),
            ({"type": "stdout"}, {"max_events": "many"}, "max_events: expected int, got str"),
            (
                {"type": "stdout"},
                {"max_event": 5},
                "max_event: unknown key (did you mean 'max_events'?)",
            ),
        ],
    )
    def test_batch_mistakes(
        self,
        tmp_path: Path,
        base_doc: dict[str, Any],
        sink: dict[str, Any],
        batch: dict[str, Any],
        expected: str,
    ) -> None:
        """Batch limits past what the sink takes in one call (or nonsense) are refused."""
        error = fails(tmp_path, base_doc, sinks=[{**sink, "batch": batch}])

        assert error == f"test: audit.sinks[0].batch.{expected}"

    @pytest.mark.parametrize(
        ("shipping", "expected"),
        [
            (
                {"retry_min": "5s", "retry_max": "1s"},
                "retry_max: expected 10ms <= retry_min <= retry_max <= 1h",
            ),
            ({"retry_min": "1ms"}, "retry_max: expected 10ms <= retry_min <= retry_max <= 1h"),
            ({"retry_max": "2h"}, "retry_max: expected 10ms <= retry_min <= retry_max <= 1h"),
            ({"lag_alarm_events": 0}, "lag_alarm_events: expected at least 1"),
            ({"lag_alarm_events": "lots"}, "lag_alarm_events: expected int, got str"),
            ({"drain": "11m"}, "drain: expected 0s to 10m"),
            ({"drain": "later"}, "drain: 'later' is not a duration (e.g. 60s, 15m, 24h, 7d)"),
            ({"retries": 3}, "retries: unknown key"),
        ],
    )
    def test_shipping_mistakes(
        self, tmp_path: Path, base_doc: dict[str, Any], shipping: dict[str, Any], expected: str
    ) -> None:
        """Retry bounds out of order or range, and other bad shipping settings, are named."""
        error = fails(tmp_path, base_doc, shipping=shipping)

        assert error.startswith(f"test: audit.shipping.{expected}")

    @pytest.mark.parametrize("lag_alarm", [-5, 0, "500ms"])
    def test_lag_alarm_under_a_second_is_refused(
        self, tmp_path: Path, base_doc: dict[str, Any], lag_alarm: object
    ) -> None:
        """lag_alarm under 1s (or negative) is refused rather than turning the alarm on for good."""
        error = fails(tmp_path, base_doc, shipping={"lag_alarm": lag_alarm})

        assert error == "test: audit.shipping.lag_alarm: expected at least 1s"


class TestPositions:
    YAML = """
        policies: [policies/]
        backends:
          aws: {region: eu-west-1}
        audit:
          sinks:
            - type: stdout
            - type: s3
              bucket: audit-bucket
              batch:
                max_events: 20000
    """

    def test_batch_error_names_file_line_and_column(self, tmp_path: Path) -> None:
        """A bad batch limit in a YAML file is reported at its file:line:col."""
        path = write(tmp_path, self.YAML)

        error = load_error(path)

        assert error == f"{path}:10:21: audit.sinks[1].batch.max_events: expected 1 to 10000"

    def test_unknown_type_names_its_line(self, tmp_path: Path) -> None:
        """An unknown sink type is reported at the line of its type."""
        path = write(tmp_path, self.YAML.replace("type: s3", "type: kinesis"))

        error = load_error(path)

        assert re.fullmatch(
            rf"{re.escape(str(path))}:7:13: audit\.sinks\[1\]\.type: expected one of .*", error
        )

    def test_duplicate_name_and_shipping_order_name_their_lines(self, tmp_path: Path) -> None:
        """A duplicate sink name and retry_min > retry_max each point at their own line."""
        path = write(
            tmp_path,
            """
            policies: [policies/]
            backends:
              aws: {region: eu-west-1}
            audit:
              sinks:
                - {type: s3, name: copy, bucket: audit-bucket}
                - type: stdout
                  name: copy
              shipping:
                retry_min: 30s
                retry_max: 5s
            """,
        )
        assert load_error(path) == (
            f"{path}:8:13: audit.sinks[1].name: two sinks are named 'copy'; give each a name"
        )

        path.write_text(path.read_text().replace("name: copy\n", "name: other\n"))
        assert load_error(path) == (
            f"{path}:11:16: audit.shipping.retry_max: expected 10ms <= retry_min <= retry_max <= 1h"
        )
