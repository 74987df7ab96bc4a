"""``python -m pipeline.stack.clickhouse``: run the embedded warehouse (see :mod:`.service`)."""

from pipeline.stack.clickhouse.service import main

raise SystemExit(main())
