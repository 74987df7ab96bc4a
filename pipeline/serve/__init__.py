"""``pipeline serve``: a reference inference node on llama.cpp, under the live policy.

- :mod:`pipeline.serve.engine`: one generation slot (tokens, checkpoints,
  confidence probes, the stop decision), the SDK put into a real engine;
- :mod:`pipeline.serve.model`: where the default model comes from;
- :mod:`pipeline.serve.pool`: the slots, the queue and the load signal;
- :mod:`pipeline.serve.service`: :class:`~pipeline.serve.service.NodeServer`,
  one request from plan to event under the node SDK;
- :mod:`pipeline.serve.app`: the OpenAI-compatible HTTP API, health, metrics;
- :mod:`pipeline.serve.protocol` (wire format), :mod:`pipeline.serve.events`
  (segment and event), :mod:`pipeline.serve.metrics`, :mod:`pipeline.serve.config`
  (``PIPELINE_SERVE__...``), :mod:`pipeline.serve.errors`;
- :mod:`pipeline.serve.capture`: ``pipeline capture``, trajectories of a question file.

How to run it and how to put the SDK into another engine: ``docs/serving.md``.

Needs the ``llm`` extra (llama-cpp-python, the SmolLM2 GGUF, FastAPI, uvicorn).
"""
