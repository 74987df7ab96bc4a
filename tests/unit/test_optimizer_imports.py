"""The optimizer is a pure core: importing it loads no service client."""

from __future__ import annotations

import json
import subprocess
import sys

import pipeline.optimizer

IO = ["confluent_kafka", "faust", "mlflow", "clickhouse_connect", "chdb", "aiokafka", "matplotlib"]
# The server side: the optimizer hands over values; the controller reads and registers them.
SERVER = ["registry", "warehouse", "controller", "publisher", "audit", "stream", "config", "stack"]


def test_importing_the_optimizer_loads_no_io_library() -> None:
    script = (
        "import json, sys, pipeline.optimizer as o\n"
        "[getattr(o, name) for name in o.__all__]\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    roots = {name.split(".")[0] for name in loaded}
    assert "scipy" in roots  # the check itself sees real imports
    assert not roots & set(IO), roots & set(IO)
    ours = {name.split(".")[1] for name in loaded if name.startswith("pipeline.")}
    assert "optimizer" in ours
    assert not ours & set(SERVER), ours & set(SERVER)


def test_every_exported_name_resolves() -> None:
    for name in pipeline.optimizer.__all__:
        assert getattr(pipeline.optimizer, name) is not None
