"""``pipeline serve``: a reference inference node on llama.cpp, under the live policy.

- :mod:`pipeline.serve.engine`: one generation slot (tokens, checkpoints,
  confidence probes, the stop decision), the SDK put into a real engine;
- :mod:`pipeline.serve.model`: where the default model comes from.

Needs the ``llm`` extra (llama-cpp-python, the SmolLM2 GGUF, FastAPI, uvicorn).
"""
