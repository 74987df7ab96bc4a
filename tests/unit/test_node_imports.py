"""The node SDK stays light: importing it loads no server-side or ML framework."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ["faust", "mlflow", "clickhouse_connect", "chdb", "aiokafka", "typer", "rich"]
HEAVY = ["torch", "transformers", "llama_cpp", "numpy", "yaml"]


def loaded_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout))


def test_importing_the_sdk_loads_nothing_forbidden() -> None:
    loaded = loaded_after(
        "import pipeline.node, pipeline.node.adapters, pipeline.node.testing\n"
        "[getattr(pipeline.node, name) for name in pipeline.node.__all__]"
    )
    assert "confluent_kafka" in loaded  # the check itself sees real imports
    roots = {name.split(".")[0] for name in loaded}
    assert not roots & set(FORBIDDEN + HEAVY), roots & set(FORBIDDEN + HEAVY)


def test_node_settings_import_without_clients_so_pipeline_config_can_embed_them() -> None:
    # pipeline.config may import NodeSettings; the emitter imports pipeline.config.
    # Loading the settings must therefore load neither, or the two would cycle.
    loaded = loaded_after("from pipeline.node.config import NodeSettings")
    assert "pipeline.config" not in loaded
    assert "pipeline.node.emitter" not in loaded
    assert "confluent_kafka" not in loaded


def test_every_exported_name_resolves() -> None:
    import pipeline.node

    assert sorted(pipeline.node.__all__) == sorted(pipeline.node._EXPORTS)
    for name in pipeline.node.__all__:
        assert getattr(pipeline.node, name) is not None
