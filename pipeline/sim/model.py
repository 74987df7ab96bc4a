"""The generative model of one request: a latent "answer found" process.

Pure and deterministic: request ``index`` of seed ``seed`` is drawn from its
own ``random.Random`` instances (seeded by a hash of seed, stream and index),
so it is the same whatever else was drawn before, on any machine, and nodes
can generate disjoint indices in parallel.

The story of a request, per segment spec:

- With probability falling with difficulty the model can solve it; it then
  *finds* the answer after a lognormal number of tokens (later when harder)
  and goes on checking and explaining for a while before it ends: those are
  the tokens early stopping can save. Unsolvable requests ramble longer and
  often hit the budget.
- At each checkpoint (every ``k`` tokens, plus the last token) the trial
  answer is right at a small guess rate before the answer is found; after,
  it is mostly kept, but now and then lost and regained (real trial
  answers flicker).
- Confidence is ``sigmoid`` of a latent that rises along the trajectory,
  jumps when the answer is found, and carries a per-request offset, AR(1)
  noise and the segment's calibration bias: informative, imperfect, and
  over- or under-confident per segment.
- The full-generation answer is the last checkpoint's, so final correctness
  is tied to the same process.

Segments with a :class:`~pipeline.sim.scenario.ChainSpec` (the ``reasoning``
scenario) tell the story of a reasoning model instead: the whole chain's
length is drawn first and the answer is found at a fraction of it; the first
answer found may be wrong and corrected later, or right and argued away later
(overthinking); confidence climbs over a few hundred tokens once an answer is
held. See ``docs/reasoning-scenario.md``.
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

from pipeline.sim.answers import correct_form, gold_answer, wrong_answer
from pipeline.sim.scenario import ChainSpec, Scenario, SegmentSpec
from schemas import Checkpoint, Segment

MAX_SIM_TOKENS = 2048
"""Longest natural generation; keeps trajectories far below the contract's 512 points."""

# Latent confidence (logit scale). Tuned so the mean confidence starts near
# 0.55 and ends near 0.8, as in the real sample.
_BASE = 0.0
_RISE = 0.35
_JUMP = 1.5
_REQUEST_SD = 0.35
_NOISE_SD = 0.45
_NOISE_RHO = 0.5
_GUESS = 0.04
_WRAP = 0.8
_LOSE = 0.03
_REGAIN = 0.6
_WRONG_PERSISTS = 0.6
_PROMPT_TOKENS = {"short": (16, 128), "medium": (128, 768), "long": (768, 3072)}
# Chains of thought (segments with a ChainSpec), logit scale: confidence is low
# before the answer is found and rises as it nears (a lookahead), then climbs
# towards a high level while a right answer is held and a middling one while a
# wrong answer is: informative and roughly calibrated, never a perfect signal.
_CHAIN_PRE = -2.8
_CHAIN_LOOK = 1.2
_CHAIN_RIGHT = 3.2
_CHAIN_WRONG = 0.3
_CHAIN_SLIP = 0.01


def request_rng(seed: int, index: int, stream: str) -> random.Random:
    """The random source of one request and one purpose (stable across processes)."""
    digest = hashlib.blake2b(f"{seed}:{stream}:{index}".encode(), digest_size=8).digest()
    # A simulation, not security: what matters is that the seed reproduces it.
    return random.Random(int.from_bytes(digest, "big"))  # noqa: S311


@dataclass(frozen=True, slots=True)
class Latent:
    """The numbers of one trajectory, without strings: all the oracle needs.

    Attributes:
        tokens: Tokens at each checkpoint, strictly increasing; the last is the end.
        confidence: Confidence at each checkpoint, in (0, 1).
        correct: Whether the trial answer at each checkpoint is right.
        natural_end: True when generation ended by itself before the budget.
        found_at: Tokens after which the answer is known (``inf``: never).
    """

    tokens: tuple[int, ...]
    confidence: tuple[float, ...]
    correct: tuple[bool, ...]
    natural_end: bool
    found_at: float


def sample_latent(spec: SegmentSpec, every: int, budget: int, rng: random.Random) -> Latent:
    """Draw one trajectory of segment ``spec`` with checkpoints every ``every`` tokens.

    The draws are sequential, so the same ``rng`` state with a larger budget
    gives the same prefix: a budget only cuts a trajectory short.
    """
    if spec.chain is not None:
        return _sample_chain(spec, spec.chain, every, budget, rng)
    d = spec.difficulty
    scale = spec.find_tokens * (1.0 + d)
    solvable = rng.random() < 0.97 - 0.55 * d
    found_at = scale * math.exp(0.45 * rng.gauss()) if solvable else math.inf
    if solvable:
        # After finding it the model goes on (checks, explains): the tokens early stopping saves.
        length = found_at + 8.0 + _WRAP * scale * rng.expovariate(1.0)
    else:
        # Without the answer the model rambles: these are most of the budget stops.
        length = 4.0 * scale * math.exp(0.4 * rng.gauss())
    end_len = max(4, min(int(length), MAX_SIM_TOKENS))
    end = min(end_len, budget)
    offset = _BASE + spec.conf_bias + _REQUEST_SD * rng.gauss()
    lose = _LOSE + 0.05 * d
    first_right = 0.95 - 0.1 * d
    innovation = _NOISE_SD * math.sqrt(1.0 - _NOISE_RHO**2)

    points = [*range(every, end, every), end]
    confidence: list[float] = []
    correct: list[bool] = []
    gauss, uniform, exp = rng.gauss, rng.random, math.exp
    noise = _NOISE_SD * gauss()  # stationary from the start; each checkpoint steps it once
    right = found = False
    for t in points:
        noise = _NOISE_RHO * noise + innovation * gauss()
        u = uniform()
        if t < found_at:
            right = u < _GUESS
        elif not found:
            found = True
            right = u < first_right
        elif right:
            # Once found, an answer is mostly kept; now and then the model talks itself out of it.
            right = u >= lose
        else:
            right = u < _REGAIN
        jump = (_JUMP if right else 0.3 * _JUMP) if found else 0.0
        conf = 1.0 / (1.0 + exp(-(offset + _RISE * min(t / scale, 2.0) + jump + noise)))
        # Rounded like the real capture; never exactly 0 or 1, so threshold 1.0 never stops.
        confidence.append(round(0.0001 if conf < 0.0001 else min(conf, 0.9999), 4))
        correct.append(right)
    return Latent(
        tokens=tuple(points),
        confidence=tuple(confidence),
        correct=tuple(correct),
        natural_end=end_len <= budget,
        found_at=found_at,
    )


def _sample_chain(
    spec: SegmentSpec, chain: ChainSpec, every: int, budget: int, rng: random.Random
) -> Latent:
    """Draw one long chain of thought (see :class:`~pipeline.sim.scenario.ChainSpec`).

    Every random draw but the per-checkpoint ones comes first, and each
    checkpoint draws the same two numbers, so a budget only cuts the chain.
    """
    d = spec.difficulty
    gauss, uniform, exp = rng.gauss, rng.random, math.exp
    solvable = uniform() < 0.98 - 0.5 * d
    length = chain.length_tokens * (1.0 + 0.5 * d) * exp(0.45 * gauss())
    logit = math.log(chain.found_fraction / (1.0 - chain.found_fraction))
    share = 1.0 / (1.0 + exp(-(logit + chain.fraction_sd * gauss())))
    first_right = uniform() < chain.first_right - 0.15 * d
    overthink = uniform() < chain.overthink * (1.0 + d)
    corrects = uniform() < chain.self_correct * (1.0 - 0.5 * d)
    turn = uniform()
    if solvable:
        found_at = share * length
    else:
        # Without the answer the model keeps exploring: most budget stops are these.
        found_at, length = math.inf, 1.6 * length
    # The second thought (an overthought right answer, or a corrected wrong one) comes
    # somewhere in what is left of the chain after the answer is first found.
    flip_at = found_at + turn * (length - found_at) if solvable else math.inf
    flips = overthink if first_right else corrects
    end_len = max(every, min(int(length), chain.max_tokens))
    end = min(end_len, budget)
    offset = _BASE + spec.conf_bias + _REQUEST_SD * gauss()
    pre_scale = chain.length_tokens * (1.0 + 0.5 * d) * chain.found_fraction
    innovation = _NOISE_SD * math.sqrt(1.0 - _NOISE_RHO**2)

    points = [*range(every, end, every), end]
    confidence: list[float] = []
    correct: list[bool] = []
    noise = _NOISE_SD * gauss()
    start = _CHAIN_PRE + _CHAIN_LOOK * min(found_at / pre_scale, 1.0)  # the level when found
    for t in points:
        noise = _NOISE_RHO * noise + innovation * gauss()
        u = uniform()
        if t < found_at:
            right = u < _GUESS
            level = _CHAIN_PRE + _CHAIN_LOOK * min(t / pre_scale, 1.0)
        else:
            second = flips and t >= flip_at
            right = (first_right != second) and u >= _CHAIN_SLIP
            # Confidence climbs from where it was towards the level of the answer now held.
            since, before = (flip_at, _level(first_right)) if second else (found_at, start)
            climb = min(1.0, (t - since) / chain.ramp_tokens)
            level = before + (_level(right) - before) * climb
        z = offset + level + noise
        conf = 1.0 / (1.0 + exp(-z))
        confidence.append(round(0.0001 if conf < 0.0001 else min(conf, 0.9999), 4))
        correct.append(right)
    return Latent(
        tokens=tuple(points),
        confidence=tuple(confidence),
        correct=tuple(correct),
        natural_end=end_len <= budget,
        found_at=found_at,
    )


def _level(right: bool) -> float:
    return _CHAIN_RIGHT if right else _CHAIN_WRONG


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One simulated request with its full trajectory (what it would do unstopped).

    Attributes:
        index: Position in the scenario's request stream.
        request_id: Unique id (``"<run_id>-<index>"``).
        spec: The segment spec in force for it (after any drift).
        model: The model name that served it.
        tokens_prompt: Prompt length.
        token_budget: The budget the trajectory was cut at.
        gold: The canonical gold answer.
        latent: Tokens, confidences and correctness per checkpoint.
        answers: Trial answer string per checkpoint.
    """

    index: int
    request_id: str
    spec: SegmentSpec
    model: str
    tokens_prompt: int
    token_budget: int
    gold: str
    latent: Latent
    answers: tuple[str, ...]

    @property
    def segment(self) -> Segment:
        """The contract's segment features."""
        return self.spec.segment()

    @property
    def full_correct(self) -> bool:
        """Whether the full generation's answer is right."""
        return self.latent.correct[-1]

    @property
    def tokens_full(self) -> int:
        """Tokens of the full generation."""
        return self.latent.tokens[-1]

    def trajectory(self) -> tuple[Checkpoint, ...]:
        """The checkpoints as contract parts (built on demand: they cost)."""
        lat = self.latent
        return tuple(
            Checkpoint(tokens=t, confidence=c, answer=a)
            for t, c, a in zip(lat.tokens, lat.confidence, self.answers, strict=True)
        )


def request_id(run_id: str, index: int) -> str:
    """The request id of ``index`` in run ``run_id``."""
    return f"{run_id}-{index}"


def pick_segment(scenario: Scenario, rng: random.Random) -> SegmentSpec:
    """Draw a segment in proportion to the specs' weights."""
    cumulative = list(accumulate(spec.weight for spec in scenario.segments))
    u = rng.random() * cumulative[-1]
    return scenario.segments[min(bisect_right(cumulative, u), len(cumulative) - 1)]


def generate(
    scenario: Scenario,
    seed: int,
    index: int,
    *,
    budget: int | None = None,
    run_id: str = "sim",
) -> SimRequest:
    """Request ``index`` of the scenario's stream under ``seed``.

    Args:
        scenario: The fleet's traffic.
        seed: The random seed; the same seed gives the same request.
        index: Position in the stream (drift applies from its start index).
        budget: Token budget to cut at; the segment's when None.
        run_id: Prefix of the request id, to keep runs apart downstream.
    """
    rng = request_rng(seed, index, "request")
    base = pick_segment(scenario, rng)
    spec = scenario.spec_at(base.key, index)
    low, high = _PROMPT_TOKENS[spec.bucket]
    tokens_prompt = rng.randint(low, high)
    cut = spec.token_budget if budget is None else budget
    latent = sample_latent(spec, scenario.checkpoint_every, cut, rng)
    text_rng = request_rng(seed, index, "answers")
    gold = gold_answer(spec.task, text_rng)
    return SimRequest(
        index=index,
        request_id=request_id(run_id, index),
        spec=spec,
        model=scenario.model_at(index),
        tokens_prompt=tokens_prompt,
        token_budget=cut,
        gold=gold,
        latent=latent,
        answers=_answers(spec, gold, latent.correct, text_rng),
    )


def _answers(
    spec: SegmentSpec, gold: str, correct: tuple[bool, ...], rng: random.Random
) -> tuple[str, ...]:
    out: list[str] = []
    wrong = ""
    for right in correct:
        if right:
            out.append(correct_form(spec.task, gold, rng))
            continue
        # A wrong trial answer tends to stick for a few checkpoints, as in the real sample.
        if not wrong or rng.random() >= _WRONG_PERSISTS:
            wrong = wrong_answer(spec.task, gold, rng)
        out.append(wrong)
    return tuple(out)
