"""The embedded ClickHouse server: the ClickHouse HTTP interface over chdb, on loopback.

Part of the embedded stack (``pipeline up`` starts it as
``python -m pipeline.stack.clickhouse``), not of warehouse access: every
component reaches it, like a real ClickHouse server, through
:mod:`pipeline.warehouse.client`. It alone owns the chdb data path.

- :mod:`.service`: the process (settings, lock, migrations, serve until SIGTERM).
- :mod:`.ownership`: the lock file that makes it the path's one owner.
- :mod:`.server`: the HTTP server (credentials, read-only callers, limits).
- :mod:`.protocol`, :mod:`.body`: ClickHouse's HTTP parameters, errors and request bodies.
- :mod:`.sql`: statement checks (read-only, no ``INTO OUTFILE``/``FROM INFILE``).
- :mod:`.engine`: queries and inserts on chdb, with insert dedup tokens.

Importing this package loads no chdb.
"""
