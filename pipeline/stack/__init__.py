"""The embedded stack: real Kafka, ClickHouse (chdb) and MLflow on one machine.

- :mod:`.manager`: ``pipeline up``/``down``/``status`` (start, wait, stop exactly what it started).
- :mod:`.process`: pid files with process start times.
- :mod:`.kafka`: the KRaft broker from Maven-resolved jars.
- :mod:`.clickhouse`: the embedded ClickHouse HTTP server over chdb.
- :mod:`.mlflow_store`: the MLflow server on SQLite.
- :mod:`.topics`: the topic spec and its idempotent creation.
"""
