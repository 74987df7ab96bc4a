"""ClickHouse access for every component: one code path to a server or the embedded one.

- :mod:`.client` connects any component to ClickHouse over HTTP (a server in
  production, the embedded server of :mod:`pipeline.stack.clickhouse` locally).
- :mod:`.migrations` applies the versioned DDL in ``infra/clickhouse/migrations``.
- :mod:`.rows` maps contract messages to table rows.

Importing this package loads neither chdb nor clickhouse-connect.
"""
