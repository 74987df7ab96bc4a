"""The stream worker: join inference events with labels and feedback, and sink to ClickHouse.

- :mod:`.em`, :mod:`.state` and :mod:`.join` are the pure domain core (EM, the join
  state and its byte format, the join state machine).
- :mod:`.processor` turns batches of input records into outcomes and dead letters,
  still pure, over a :mod:`.store` of serialised states.
- :mod:`.app` builds the Faust app around it, writing through :mod:`.faust_io`;
  :mod:`.topics` checks co-partitioning.
- :mod:`.writer` and :mod:`.sink` move the topics into ClickHouse, idempotently.
- :mod:`.runner` runs joiner and sink with one failure policy and a clean shutdown;
  :mod:`.health` serves ``/metrics`` (:mod:`.metrics`) and ``/health``.
- :mod:`.config` holds :class:`~pipeline.stream.config.StreamSettings`; :mod:`.errors`
  the exceptions.

Importing this package loads neither Faust nor a Kafka or ClickHouse client.
"""
