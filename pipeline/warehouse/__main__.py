"""``python -m pipeline.warehouse``: run the embedded warehouse (see :mod:`.service`)."""

from pipeline.warehouse.service import main

raise SystemExit(main())
