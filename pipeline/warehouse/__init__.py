"""The warehouse: ClickHouse access for every component, and the embedded endpoint.

- :mod:`.client` connects any component to ClickHouse over HTTP (a server in
  production, the embedded warehouse locally) with one code path.
- :mod:`.migrations` applies the versioned DDL in ``infra/clickhouse/migrations``.
- :mod:`.rows` maps contract messages to table rows.
- :mod:`.service` is the embedded warehouse process (``python -m pipeline.warehouse``):
  it alone owns the chdb data path and serves the ClickHouse HTTP interface over it
  (:mod:`.server`, :mod:`.engine`, :mod:`.protocol`, :mod:`.body`, :mod:`.sql`).

Importing this package loads neither chdb nor clickhouse-connect.
"""
