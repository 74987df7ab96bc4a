"""A policy version as an MLflow pyfunc model, so a reviewer can query it.

Logged as code ("models from code"): MLflow copies this file into the model
and runs it on load, so nothing is unpickled. It imports only ``schemas``
(copied into the model as code too), pandas and MLflow, so the artifact
loads without this repository installed::

    model = mlflow.pyfunc.load_model("models:/earlystop-policy-default/7")
    model.predict(pd.DataFrame({"segment": ["acme/qa/short"],
                                "load_mode": ["peak"], "tokens": [40]}))

Each row answers with the threshold in force (NaN before ``min_tokens``:
no early stop) and the policy key that answered (the most specific of
``tenant/task/bucket``, ``task`` and ``global`` that the policy holds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import pandas as pd  # type: ignore[import-untyped]  # pandas ships no type information
from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel

from schemas import GLOBAL_SEGMENT, LoadMode, PolicyBody

INPUT_COLUMNS: Final = ("segment", "load_mode", "tokens")
OUTPUT_COLUMNS: Final = ("threshold", "policy_key")
_MODES: Final[dict[str, LoadMode]] = {"offpeak": "offpeak", "normal": "normal", "peak": "peak"}


def lookup(body: PolicyBody, segment: str, load_mode: str, tokens: int) -> tuple[str, float | None]:
    """The policy key that serves ``segment`` and its threshold after ``tokens`` tokens.

    Args:
        body: The policy.
        segment: ``tenant/task/length_bucket``, a task, or ``global``.
        load_mode: ``offpeak``, ``normal`` or ``peak``; anything else reads as ``normal``.
        tokens: Tokens generated so far.
    """
    parts = segment.split("/")
    keys = [segment, parts[1]] if len(parts) == 3 else [segment]
    key = next((k for k in keys if k in body.segments), GLOBAL_SEGMENT)
    mode = _MODES.get(load_mode, "normal")
    return key, body.segments[key].threshold_at(int(tokens), mode)


class PolicyModel(PythonModel):
    """Answers "which threshold is in force" for rows of (segment, load_mode, tokens)."""

    def __init__(self) -> None:
        self.body: PolicyBody | None = None

    def load_context(self, context: Any) -> None:
        """Read the policy file logged among the model's artifacts."""
        raw = Path(context.artifacts["policy"]).read_bytes()
        self.body = PolicyBody.model_validate_json(raw)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """One row per input row: ``threshold`` (NaN: no early stop yet) and ``policy_key``."""
        if self.body is None:
            self.load_context(context)
        body = self.body
        assert body is not None  # noqa: S101  # load_context sets it or raises
        missing = [c for c in INPUT_COLUMNS if c not in model_input.columns]
        if missing:
            msg = f"missing input columns {missing}; expected {list(INPUT_COLUMNS)}"
            raise ValueError(msg)
        answers = [
            lookup(body, str(seg), str(mode), int(tok))
            for seg, mode, tok in zip(
                model_input["segment"], model_input["load_mode"], model_input["tokens"], strict=True
            )
        ]
        return pd.DataFrame(
            {
                "threshold": [float("nan") if t is None else t for _, t in answers],
                "policy_key": [k for k, _ in answers],
            }
        )


set_model(PolicyModel())
