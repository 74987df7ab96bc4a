"""Settings of the stream worker (the ``stream`` section: ``PIPELINE_STREAM__*``)."""

from __future__ import annotations

import os
import re
import socket

from pydantic import BaseModel, ConfigDict, Field

_ID = r"^[A-Za-z0-9._-]+$"


def default_worker_id() -> str:
    """Host name and process id, as an id the contracts accept."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "host"
    return f"{host[:100]}-{os.getpid()}"


class StreamSettings(BaseModel):
    """How the joiner and the ClickHouse sink run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: str = Field(default="earlystop-joiner", pattern=_ID, max_length=100)
    """Faust app id: the consumer group and the changelog topic's name (topic prefix in front)."""
    worker_id: str | None = Field(default=None, pattern=_ID, max_length=128)
    """Name in dead letters and logs; host and pid when unset."""
    join_window_s: float = Field(default=3600.0, gt=0)
    """How long after its first input a request waits for the rest."""
    sweep_interval_s: float = Field(default=5.0, gt=0)
    """How often expired entries are closed."""
    commit_interval_s: float = Field(default=1.0, gt=0)
    """How often the joiner commits; produced outcomes are flushed before each commit."""
    store: str = Field(default="memory://", pattern=r"^(memory|rocksdb)://")
    """Faust table store; memory rebuilds from the changelog at every start."""
    batch_max_records: int = Field(default=1000, ge=1, le=100_000)
    """The joiner processes up to this many records at a time..."""
    batch_max_s: float = Field(default=0.05, gt=0)
    """...or what arrived within this many seconds."""
    max_poll_records: int | None = Field(default=None, ge=1)
    """Records per consumer fetch (Faust ``broker_max_poll_records``); None: no limit."""
    producer_linger_s: float = Field(default=0.005, ge=0)
    """How long the producer waits to fill a batch of outcomes and changelog records."""
    producer_batch_bytes: int = Field(default=262_144, ge=1024)
    """The producer's batch size per partition."""
    state_cache_entries: int = Field(default=20_000, ge=0)
    """Decoded join states kept in memory (about 5 kB each); 0 decodes on every read."""
    gc_gen0_threshold: int | None = Field(default=50_000, ge=1)
    """Allocations between young-generation GC runs while the worker runs; None: Python's."""
    sink_enabled: bool = True
    """Run the ClickHouse sink in the worker process."""
    sink_batch_rows: int = Field(default=5000, ge=1, le=1_000_000)
    """Write when this many records are buffered..."""
    sink_batch_max_s: float = Field(default=1.0, gt=0)
    """...or when the oldest buffered record is this old."""
    sink_retry_initial_s: float = Field(default=0.2, gt=0)
    sink_retry_max_s: float = Field(default=30.0, gt=0)
    lag_interval_s: float = Field(default=5.0, gt=0)
    """How often consumer lag and records per second are measured for ``/metrics``."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve ``/metrics`` and ``/health`` on this port (loopback by default); off when unset."""
    metrics_host: str = "127.0.0.1"
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    """How long a stop may take to flush and commit before the worker gives up."""

    def effective_worker_id(self) -> str:
        """The configured worker id, or host and pid."""
        return self.worker_id or default_worker_id()
