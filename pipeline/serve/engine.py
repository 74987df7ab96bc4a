"""One generation slot on llama.cpp: tokens, checkpoints, probes and the stop decision.

A :class:`LlamaEngine` owns one llama-cpp-python ``Llama`` context and is used
by one request at a time (the pool hands slots out). Its loop is the node SDK
put into a real engine, the worked example of the README's "Putting the SDK
into another engine":

1. the request's :class:`~pipeline.node.RequestPlan` comes from the node's
   controller when the request starts (exploration, canary or production);
2. a token is sampled from the last logits and evaluated, one at a time;
3. every ``check_every`` tokens from the plan's ``min_tokens`` on, a
   trial-answer probe (:class:`~pipeline.node.probes.LlamaCppProbe`) gives a
   confidence and a trial answer, and ``controller.should_stop`` decides;
4. the result carries what the event needs: token counts (probe tokens
   apart), the stop reason, the confidence at the stop, the trajectory.

Probes run only when they can matter: on exploration requests (for their
trajectory) and under rules that can stop early. Under the safe default
(threshold off everywhere) a request costs exactly its generation.

The answer reported in the event is the trial answer at the stop: a probe at
the natural end extracts it too, so that EM labels compare like with like.
That final extraction is not counted as probe cost, because a node that never
stops early pays it as well.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.node import Controller, RequestPlan
from pipeline.node.probes import (
    DEFAULT_INDUCER,
    DEFAULT_PROBE_TOKENS,
    LlamaCppProbe,
    ProbeResult,
    llama_last_logits,
)
from pipeline.serve.errors import GenerationCancelled, ModelLoadError, PromptTooLongError
from schemas import Checkpoint, StopReason
from schemas._types import MAX_TRAJECTORY_POINTS


@dataclass(frozen=True, slots=True)
class Sampling:
    """How to pick tokens: greedy at temperature 0, else softmax with top-p."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Generation:
    """What one request produced, in the terms of its event."""

    text: str
    """What the user gets (with the trial answer appended after a confident stop)."""
    answer: str
    """The trial answer at the stop: the event's answer."""
    tokens_prompt: int
    tokens_generated: int
    tokens_probe: int
    tokens_budget: int
    """The effective budget: the smallest of the plan's, the request's and the context's room."""
    stop_reason: StopReason
    confidence: float
    threshold: float | None
    trajectory: tuple[Checkpoint, ...]
    seconds: float


TextSink = Callable[[str], None]


class LlamaEngine:
    """One llama.cpp context serving one request at a time.

    Args:
        model_path: A GGUF file.
        n_ctx: Context window in tokens (prompt plus generation plus a probe).
        check_every: Tokens between checkpoints (the trajectories' spacing too).
        probe_tokens: Greedy tokens a probe decodes at most.
        inducer: The probe's answer inducer.
        n_threads: CPU threads for this context (None: llama.cpp's default).

    Raises:
        ModelLoadError: the file is missing or llama.cpp cannot load it.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 2048,
        check_every: int = 8,
        probe_tokens: int = DEFAULT_PROBE_TOKENS,
        inducer: str = DEFAULT_INDUCER,
        n_threads: int | None = None,
    ) -> None:
        if not model_path.is_file():
            msg = f"model file {model_path} does not exist: pass --model PATH to a GGUF file"
            raise ModelLoadError(msg)
        try:
            from llama_cpp import Llama  # noqa: PLC0415 - the `llm` extra
        except ImportError as exc:
            msg = "llama-cpp-python is not installed: pip install 'earlystop-pipeline[llm]'"
            raise ModelLoadError(msg) from exc
        try:
            # n_threads_batch too: llama-cpp-python defaults it to every core whatever
            # n_threads says, and slots whose batch evaluations (prompt, probe inducer)
            # spin on all cores at once slowed probes by 10x or more on 2 cores.
            self.llama: Any = Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            msg = f"llama.cpp cannot load {model_path} ({exc}): is it a GGUF model file?"
            raise ModelLoadError(msg) from exc
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.check_every = check_every
        self.inducer = inducer
        self.probe = LlamaCppProbe(self.llama, inducer=inducer, max_tokens=probe_tokens)
        self._eog = self._end_tokens()
        self._template = self._chat_formatter()

    def _end_tokens(self) -> frozenset[int]:
        llama = self.llama
        ends = {llama.token_eos()}
        for name in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>"):
            ids = llama.tokenize(name.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                ends.add(ids[0])
        return frozenset(ends)

    def _chat_formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: PLC0415

        template = self.llama.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        llama = self.llama
        piece = llama._model.token_get_text  # noqa: SLF001 - no public accessor
        return Jinja2ChatFormatter(
            template=template,
            eos_token=piece(llama.token_eos()),
            bos_token=piece(llama.token_bos()),
        )

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text of a chat, by the model's own chat template."""
        if self._template is None:
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            return "\n".join([*lines, "assistant:"])
        return str(self._template(messages=list(messages)).prompt)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens of the chat template parsed as such)."""
        return list(self.llama.tokenize(text.encode(), add_bos=True, special=True))

    def budget(self, prompt_tokens: int, plan: RequestPlan, sampling: Sampling) -> int:
        """Generation budget: the plan's, the request's and the room left in the context.

        Raises:
            PromptTooLongError: no room for one token and a probe after the prompt.
        """
        room = self.n_ctx - prompt_tokens - self.probe.cost_per_probe
        if room < 1:
            msg = (
                f"the prompt has {prompt_tokens} tokens; this node's context window is "
                f"{self.n_ctx} (with {self.probe.cost_per_probe} kept for a probe)"
            )
            raise PromptTooLongError(msg)
        return max(1, min(plan.token_budget, sampling.max_tokens, room))

    def generate(
        self,
        prompt: Sequence[int],
        plan: RequestPlan,
        controller: Controller,
        sampling: Sampling,
        *,
        on_text: TextSink | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Generation:
        """Generate under ``plan``; see the module doc.

        Raises:
            PromptTooLongError: the prompt leaves no room to generate.
            GenerationCancelled: ``cancelled()`` turned true (the client left).
        """
        started = time.perf_counter()
        budget = self.budget(len(prompt), plan, sampling)
        llama = self.llama
        llama.reset()
        llama.eval(list(prompt))
        logits = llama_last_logits(llama)
        rng = _Sampler(sampling)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        probing = plan.probes
        text: list[str] = []
        points: list[Checkpoint] = []
        probe_cost = generated = 0
        last: ProbeResult | None = None
        reason: StopReason = "budget"
        while generated < budget:
            if cancelled is not None and cancelled():
                raise GenerationCancelled
            token = rng.pick(logits)
            if token in self._eog:
                reason = "natural_end"
                break
            llama.eval([token])
            logits = llama_last_logits(llama)
            generated += 1
            piece = decoder.decode(llama.detokenize([token]))
            if piece:
                text.append(piece)
                if on_text is not None:
                    on_text(piece)
            if sampling.stop and any(s in "".join(text[-8:]) for s in sampling.stop):
                reason = "natural_end"
                break
            if not probing or generated % self.check_every or generated < plan.min_tokens:
                continue
            last = self.probe()
            probe_cost += last.tokens
            if plan.exploration and len(points) < MAX_TRAJECTORY_POINTS:
                points.append(
                    Checkpoint(
                        tokens=generated, confidence=last.confidence, answer=last.answer[:1024]
                    )
                )
            if controller.should_stop(plan, generated, last.confidence).reason == "confident":
                reason = "confident"
                break
        else:
            reason = "budget"
        final = last if reason == "confident" and last is not None else self.probe()
        if plan.exploration and not points:
            # Ended before its first checkpoint: the contract wants one point at least,
            # and the answer at the end is what every threshold would have served.
            points.append(
                Checkpoint(
                    tokens=generated, confidence=final.confidence, answer=final.answer[:1024]
                )
            )
        body = "".join(text)
        if reason == "confident":
            suffix = f"{self.inducer} {final.answer}"
            body += suffix
            if on_text is not None:
                on_text(suffix)
        return Generation(
            text=body,
            answer=final.answer,
            tokens_prompt=len(prompt),
            tokens_generated=generated,
            tokens_probe=probe_cost,
            tokens_budget=budget,
            stop_reason=reason,
            confidence=final.confidence,
            threshold=plan.threshold_at(generated),
            trajectory=tuple(points),
            seconds=time.perf_counter() - started,
        )


class _Sampler:
    """Greedy at temperature 0; else temperature and top-p from a seeded generator."""

    def __init__(self, sampling: Sampling) -> None:
        import numpy as np  # noqa: PLC0415

        self._np = np
        self._temperature = sampling.temperature
        self._top_p = sampling.top_p
        self._rng = np.random.default_rng(sampling.seed)

    def pick(self, logits: Any) -> int:
        np = self._np
        if self._temperature <= 0.0:
            return int(np.argmax(logits))
        scaled = np.asarray(logits, dtype=np.float64) / self._temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if self._top_p < 1.0:
            order = np.argsort(-probs)
            keep = order[: int(np.searchsorted(np.cumsum(probs[order]), self._top_p)) + 1]
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        return int(self._rng.choice(len(probs), p=probs))
