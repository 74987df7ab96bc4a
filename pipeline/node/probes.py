"""Confidence probes: how sure the model is, asked of the model itself.

The trial-answer probe (the DEER family): at a checkpoint, append an answer
inducer (a line ``Final answer:``) to what has been generated, greedily
decode a few tokens, and take the geometric mean of their probabilities as
the confidence. The decoded text is the *trial answer*: what the user would
get if generation stopped here, and what the stability rule compares.

The probe's tokens are real work, so :class:`ProbeResult` says how many it
spent: an event reports them (``InferenceEvent.tokens_probe``) and every
saving is netted of them.

The pure parts (:func:`geometric_mean_confidence`, :func:`clean_trial_answer`)
take plain numbers and strings. :class:`LlamaCppProbe` drives a
llama-cpp-python ``Llama`` through the methods it is passed, without
importing llama_cpp: it evaluates the inducer on top of the KV cache, decodes,
then rolls the cache back (``n_tokens``) so generation continues exactly as if
the probe had not run, and a probe costs only its own tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

DEFAULT_INDUCER = "\nFinal answer:"
"""Appended at a checkpoint to ask for the answer so far."""

DEFAULT_PROBE_TOKENS = 6
"""Greedy tokens decoded per probe at most (short answers fit; longer ones are cut)."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome."""

    confidence: float
    """Geometric mean of the decoded tokens' probabilities, in [0, 1]."""
    answer: str
    """The trial answer, cleaned (:func:`clean_trial_answer`)."""
    tokens: int
    """Tokens the probe evaluated (inducer plus decoded): its cost."""


def geometric_mean_confidence(logprobs: Sequence[float]) -> float:
    """exp(mean(logprobs)), clamped to [0, 1]; 0.0 for no tokens or a NaN."""
    if not logprobs:
        return 0.0
    value = math.exp(sum(logprobs) / len(logprobs))
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


def clean_trial_answer(text: str) -> str:
    """The first line of a decoded trial answer, stripped (an answer ends at a newline)."""
    return text.strip().split("\n", 1)[0].strip()


def _log_softmax_at(logits: np.ndarray[Any, Any]) -> tuple[int, float]:
    """The argmax token and its log probability under softmax(logits)."""
    import numpy as np  # noqa: PLC0415 - only engines that hand us numpy logits need it

    token = int(np.argmax(logits))
    top = float(logits[token])
    log_z = top + math.log(float(np.exp(logits - top).sum()))
    return token, top - log_z


def llama_last_logits(llama: Any) -> np.ndarray[Any, Any]:
    """A copy of the logits of the last token a ``Llama`` evaluated.

    llama-cpp-python keeps per-token logits only with ``logits_all=True``
    (costly); without it the context's buffer holds the last row, which the
    next ``eval`` overwrites, hence the copy.
    """
    import numpy as np  # noqa: PLC0415

    pointer = llama._ctx.get_logits()  # noqa: SLF001 - the public API exposes no last row
    return np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),)).copy()


class LlamaCppProbe:
    """A trial-answer probe on a llama-cpp-python ``Llama`` (any GGUF model).

    Args:
        llama: The ``Llama`` the generation runs on (same KV cache).
        inducer: Text appended to ask for the answer.
        max_tokens: Greedy tokens decoded at most.

    Call it between two generated tokens: it leaves ``llama.n_tokens`` as it
    found it (the caller keeps its own copy of the last token's logits, see
    :func:`llama_last_logits`, because the probe's evaluations overwrite them).
    """

    def __init__(
        self, llama: Any, *, inducer: str = DEFAULT_INDUCER, max_tokens: int = DEFAULT_PROBE_TOKENS
    ) -> None:
        if max_tokens < 1:
            msg = f"max_tokens must be at least 1, got {max_tokens}"
            raise ValueError(msg)
        self._llama = llama
        self._inducer = list(llama.tokenize(inducer.encode(), add_bos=False, special=False))
        self._max_tokens = max_tokens
        self._newline = set(llama.tokenize(b"\n", add_bos=False, special=False))

    @property
    def cost_per_probe(self) -> int:
        """Upper bound of the tokens one probe evaluates."""
        return len(self._inducer) + self._max_tokens

    def __call__(self) -> ProbeResult:
        """Probe at the current position and roll back; see the class doc."""
        llama = self._llama
        saved = llama.n_tokens
        try:
            llama.eval(self._inducer)
            evaluated = len(self._inducer)
            logprobs: list[float] = []
            pieces: list[int] = []
            for _ in range(self._max_tokens):
                token, logprob = _log_softmax_at(llama_last_logits(llama))
                if llama.token_eos() == token or token in self._newline and pieces:
                    break
                logprobs.append(logprob)
                pieces.append(token)
                if len(pieces) == self._max_tokens:
                    break
                llama.eval([token])
                evaluated += 1
            text = llama.detokenize(pieces).decode("utf-8", errors="ignore") if pieces else ""
        finally:
            # eval() removes KV entries past n_tokens before it decodes.
            llama.n_tokens = saved
        return ProbeResult(
            confidence=geometric_mean_confidence(logprobs),
            answer=clean_trial_answer(text),
            tokens=evaluated,
        )
