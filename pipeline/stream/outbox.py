"""The sink's dead-letter producer: records whose rows ClickHouse refused go to the topic.

The sink writes a batch, then commits its offsets; a refused row's record is
produced to the dead-letters topic and acknowledged by the broker before the
batch counts as written, so a committed offset never hides a record that is
neither in the warehouse nor in the dead-letters topic. The sink reads that
topic too, so the dead letter reaches the ``dead_letters`` table (and the
``dead_letter_counts`` view) like the joiner's. A crash between the produce and
the commit produces it again on replay; the table keeps one row per source
position and the view counts positions, so it still counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.config import Settings
from pipeline.stream.writer import TransientWriteError
from schemas import DeadLetter


class DeadLetterProducer:
    """Produces dead letters to the dead-letters topic and waits for the broker's acks."""

    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.topic = settings.topic("dead-letters")
        self.timeout_s = timeout_s
        self._producer: Any = None

    def __call__(self, letters: Sequence[DeadLetter]) -> None:
        """Produce ``letters``; return once all are acknowledged.

        Raises:
            TransientWriteError: the broker did not take them all in time (the
                sink retries the batch, whose inserts are deduplicated).
        """
        from confluent_kafka import Producer

        if self._producer is None:
            self._producer = Producer({
                **self.settings.kafka.client_config(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            })  # fmt: skip
        failed: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        for letter in letters:
            self._producer.produce(
                self.topic, key=letter.key, value=letter.to_bytes(), on_delivery=delivered
            )
        left = self._producer.flush(self.timeout_s)
        if left or failed:
            why = failed[0] if failed else f"{left} not acknowledged in {self.timeout_s:.0f} s"
            msg = f"dead letters of refused rows not delivered to {self.topic}: {why}"
            raise TransientWriteError(msg)

    def close(self) -> None:
        """Deliver what is pending (briefly) and drop the producer."""
        if self._producer is not None:
            self._producer.flush(5.0)
            self._producer = None
