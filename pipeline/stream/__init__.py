"""The stream worker: join inference events with labels and feedback, and sink to ClickHouse.

- :mod:`.em` and :mod:`.join` are the pure domain core (EM, the join state machine).
- :mod:`.processor` turns input records into outcomes and dead letters, still pure.
- :mod:`.app` builds the Faust app around it; :mod:`.topics` checks co-partitioning.
- :mod:`.writer` and :mod:`.sink` move the topics into ClickHouse, idempotently.
- :mod:`.runner` runs joiner and sink with one failure policy and a clean shutdown;
  :mod:`.health` serves ``/metrics`` (:mod:`.metrics`) and ``/health``.
- :mod:`.config` holds :class:`~pipeline.stream.config.StreamSettings`; :mod:`.errors`
  the exceptions.

Importing this package loads neither Faust nor a Kafka or ClickHouse client.
"""
