"""Import guards: the node SDK stands alone.

Each check runs in a fresh interpreter and lists ``sys.modules`` afterwards, so
an import added anywhere below the entry point (even a lazy one on the path
the code runs) makes it fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# What an inference node must never load: the server side of this project, its
# settings (pydantic-settings), and the services' client libraries.
NODE_FORBIDDEN = [
    "pipeline.config",
    "pydantic_settings",
    "pipeline.stream",
    "pipeline.publisher",
    "pipeline.controller",
    "pipeline.registry",
    "pipeline.warehouse",
    "pipeline.optimizer",
    "pipeline.audit",
    "pipeline.stack",
    "faust",
    "mlflow",
    "clickhouse_connect",
    "chdb",
    "aiokafka",
    "typer",
    "rich",
    # Heavy frameworks: adapters load them only when a caller passes their objects.
    "torch",
    "transformers",
    "llama_cpp",
    "numpy",
    "yaml",
]

# A node's whole life without a broker: the SDK's entry points, a controller
# deciding requests, an emitter queueing an event, a subscriber that falls back
# to the default policy, acks and the adapters.
RUN_A_NODE = textwrap.dedent(
    """
    import socket, tempfile
    from datetime import UTC, datetime

    import pipeline.node
    from pipeline.node import KafkaSettings, Node, NodeSettings, TransformersStopping
    from pipeline.node import LlamaCppStopping, compile_snapshot, default_policy_body
    from schemas import Segment
    from schemas.examples import inference_event

    [getattr(pipeline.node, name) for name in pipeline.node.__all__]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    state = tempfile.mkdtemp()
    settings = NodeSettings(node_id="n1", state_dir=state, bootstrap_timeout_s=0.3)
    node = Node(kafka, settings)
    status = node.start()
    assert status.source == "default", status
    plan = node.controller.begin("r1", Segment(tenant="t", task="qa", length_bucket="short"))
    node.controller.should_stop(plan, 64, 0.99)
    node.controller.swap(compile_snapshot(default_policy_body(), policy_name="default",
                                          version=2, source="broker"))
    stop = LlamaCppStopping(node.controller, plan, lambda ids, scores: 0.99, prompt_tokens=2)
    stop([1, 2, 3, 4], None)
    TransformersStopping(node.controller, plan, lambda ids, scores: 0.5, prompt_tokens=2)
    assert node.emitter is not None and node.emitter.emit(inference_event())
    node.close(timeout=1)
    """
)


def loaded_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def offenders(loaded: set[str], forbidden: list[str]) -> list[str]:
    return sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_running_a_node_loads_nothing_of_the_server_side() -> None:
    loaded = loaded_after(RUN_A_NODE)
    # Allowed besides pydantic and the standard library: the Kafka client, and
    # cryptography to verify Ed25519 signatures of control updates.
    allowed = {
        "confluent_kafka",
        "cryptography",
        "pipeline.node.subscriber",
        "pipeline.node.emitter",
    }
    assert allowed <= loaded
    assert offenders(loaded, NODE_FORBIDDEN) == []


def test_the_server_settings_embed_the_sdk_settings_not_the_reverse() -> None:
    loaded = loaded_after("import pipeline.config")
    assert "pipeline.node.kafka" in loaded  # KafkaSettings has one home: the SDK
    from pipeline.config import Settings
    from pipeline.node import KafkaSettings, NodeSettings

    assert Settings.model_fields["kafka"].annotation is KafkaSettings
    assert Settings.model_fields["node"].annotation is NodeSettings


def test_the_guard_itself_can_fail() -> None:
    loaded = loaded_after("import pipeline.config")
    assert offenders(loaded, NODE_FORBIDDEN)  # the server's settings are off-limits to a node


def test_every_exported_name_resolves() -> None:
    import pipeline.node

    for name in pipeline.node.__all__:
        assert getattr(pipeline.node, name) is not None
