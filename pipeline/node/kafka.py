"""Kafka for the node SDK: connection settings, client properties, the reliable producer.

The SDK's only Kafka module that knows about configuration: the server side
(``pipeline.config``) embeds :class:`KafkaSettings` from here, so a node never
loads pydantic-settings or any service's settings. :func:`reliable_producer`
is the one recipe for every idempotent producer in the project; the
:class:`KafkaLogBridge` keeps librdkafka's reconnect chatter out of the logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

if TYPE_CHECKING:
    from confluent_kafka import Producer

LOGGER_NAME = "pipeline.node.kafka"

log = logging.getLogger(LOGGER_NAME)


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6]:port``), falling back to ``default_port``."""
    parts = urlsplit(f"//{address}")
    return parts.hostname or "", parts.port or default_port


class KafkaSettings(BaseModel):
    """How every component reaches Kafka."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    client_id: str = Field(default="earlystop-pipeline", min_length=1)

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_have_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _ = split_host_port(server.strip(), 9092)
            if not host:
                msg = f"expected host:port[,host:port...], got {value!r}"
                raise ValueError(msg)
        return value

    @property
    def first_server(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server."""
        return split_host_port(self.bootstrap_servers.split(",")[0].strip(), 9092)

    def client_config(self) -> dict[str, str | int | float | bool]:
        """The librdkafka properties shared by producers, consumers and admin clients."""
        conf: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location is not None:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        return conf


class KafkaLogBridge:
    """The object given to librdkafka as ``logger`` (it only calls :meth:`log`)."""

    def __init__(self, interval_s: float = 60.0, name: str = LOGGER_NAME) -> None:
        self._log = logging.getLogger(name)
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def log(self, level: int, fmt: str, *args: object) -> None:
        """Forward one record; librdkafka calls ``log(level, "%s [%s] %s", fac, name, msg)``."""
        facility = str(args[0]) if args else fmt
        now = time.monotonic()
        with self._lock:
            repeat = now - self._last.get(facility, -self._interval) < self._interval
            if not repeat:
                self._last[facility] = now
        self._log.log(logging.DEBUG if repeat else level, fmt, *args)


def reliable_producer(
    kafka: KafkaSettings, *, name: str, extra: Mapping[str, Any] | None = None
) -> Producer:
    """An idempotent producer that waits for all in-sync replicas (no loss, no duplicates).

    Args:
        kafka: Connection settings.
        name: What the producer is for, in its log lines (e.g. ``"ack producer"``).
        extra: More librdkafka properties (``linger.ms``, ``on_delivery``, ...); they
            may not weaken idempotence or acks.
    """
    from confluent_kafka import Producer

    conf: dict[str, Any] = {
        **kafka.client_config(),
        "logger": KafkaLogBridge(),
        "error_cb": lambda err: log.debug("%s: %s", name, err),
        **(extra or {}),
        "enable.idempotence": True,
        "acks": "all",
    }
    return Producer(conf)


def deliver(
    producer: Producer, topic: str, value: bytes, key: str | bytes | None, timeout_s: float
) -> tuple[int | None, str | None]:
    """Produce one record and wait for the broker's answer: ``(offset, None)`` or ``(None, why)``.

    Made for producers of :func:`reliable_producer` whose ``delivery.timeout.ms``
    is below ``timeout_s``, so the record's fate is settled when this returns
    (a record that timed out may still have been written: read before retrying).
    """
    errors: list[object] = []
    offsets: list[int] = []

    def delivered(err: object, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            offsets.append(int(msg.offset()))

    try:
        producer.produce(topic, value, key, on_delivery=delivered)
    except (BufferError, ValueError) as exc:
        return None, f"not queued: {exc}"
    if producer.flush(timeout_s):
        producer.purge()  # never let it go out later, after the caller gave up
        return None, "timeout"
    if errors or not offsets:
        return None, str(errors[0]) if errors else "no delivery report"
    return offsets[0], None
