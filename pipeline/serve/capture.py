"""``pipeline capture``: run a labeled question file through the real model, write trajectories.

Each question runs to its natural end (or the token budget) under an
exploration plan (threshold off, never stopping early), with a trial-answer
probe every ``check_every`` tokens; the result is one
:class:`~schemas.TrajectoryRecord` line: the checkpoints' confidences and
trial answers, the full generation's length, and its final answer (the trial
answer at the end, as the serving engine reports it, so EM compares like with
like).

The question file is JSON Lines, one object per line::

    {"id": "q1", "segment": "demo/arith/short", "question": "What is 2 + 3?", "gold": ["5"]}

``segment`` may be a short key (see :func:`schemas.trajectory.segment_from_key`);
``gold`` is a list of accepted answers (a single string is one answer).

Output is appended one flushed line per question, so a run can be stopped
and started again: ids already in the output are skipped (:func:`done_ids`),
and a last line cut short by a kill is dropped first.

The prompt is the model's chat template with :data:`SYSTEM_PROMPT`, which
asks for a short sentence and then ``Final answer:`` with the bare answer:
the probe's inducer is that same ``Final answer:`` line, and a bare answer is
what the SQuAD-normalised EM of :mod:`pipeline.stream.em` can match. Decoding
is greedy, so a capture is reproducible on one machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from pipeline.errors import ConfigError, TrajectoryFileError
from pipeline.node import Controller, RequestPlan
from pipeline.node.decision import Rule
from schemas import Checkpoint
from schemas.trajectory import TrajectoryRecord, segment_from_key

if TYPE_CHECKING:
    from pipeline.serve.engine import LlamaEngine

SYSTEM_PROMPT = (
    "You answer questions. Reply with a short sentence, then 'Final answer:' "
    "followed by only the answer (a number or a name)."
)
"""The system message of every captured prompt (chosen on SmolLM2-135M: see the module doc)."""


class QuestionFileError(ConfigError):
    """A question-file line is not a valid question: the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Question:
    """One labeled question."""

    id: str
    segment: str
    question: str
    gold: tuple[str, ...]


def parse_question(line: str, where: str) -> Question:
    """One question from one JSON line; ``where`` names the line in errors.

    Raises:
        QuestionFileError: not JSON, a field missing or of the wrong type, a bad segment key.
    """
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        msg = f"{where}: not JSON ({exc.msg})"
        raise QuestionFileError(msg) from None
    if not isinstance(raw, dict):
        msg = f"{where}: expected a JSON object with id, segment, question, gold"
        raise QuestionFileError(msg)
    gold = raw.get("gold")
    golds = (gold,) if isinstance(gold, str) else gold
    fields = (raw.get("id"), raw.get("segment"), raw.get("question"))
    if not all(isinstance(value, str) and value for value in fields):
        msg = f"{where}: id, segment and question must be non-empty strings"
        raise QuestionFileError(msg)
    if (
        not isinstance(golds, list | tuple)
        or not golds
        or not all(isinstance(g, str) and g for g in golds)
    ):
        msg = f"{where}: gold must be a non-empty string or a non-empty list of them"
        raise QuestionFileError(msg)
    question_id, segment, text = (str(value) for value in fields)
    try:
        segment_from_key(segment)
    except ValueError as exc:
        msg = f"{where}: {exc}"
        raise QuestionFileError(msg) from None
    return Question(id=question_id, segment=segment, question=text, gold=tuple(golds))


def read_questions(path: Path) -> list[Question]:
    """Every question of ``path`` (blank lines skipped).

    Raises:
        QuestionFileError: the file is unreadable, a line is malformed or an id repeats.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read question file {path}: {exc}"
        raise QuestionFileError(msg) from None
    questions: list[Question] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        question = parse_question(line, f"{path} line {number}")
        if question.id in seen:
            msg = f"{path} line {number}: id {question.id!r} appears twice"
            raise QuestionFileError(msg)
        seen.add(question.id)
        questions.append(question)
    return questions


def done_ids(out: Path) -> set[str]:
    """Request ids already captured in ``out`` (empty when it does not exist).

    A last line without its newline (a capture killed mid-write) is cut off
    the file, so the question is captured again.

    Raises:
        TrajectoryFileError: a complete line is not a trajectory record.
    """
    if not out.exists():
        return set()
    data = out.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        with out.open("r+b") as handle:
            handle.truncate(cut)
    ids: set[str] = set()
    for number, line in enumerate(data[:cut].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ids.add(TrajectoryRecord.from_line(line).request_id)
        except ValidationError as exc:
            msg = f"{out} line {number} is not a trajectory record ({exc.errors()[0]['msg']})"
            raise TrajectoryFileError(msg) from None
    return ids


def exploration_plan(question: Question, max_tokens: int) -> RequestPlan:
    """A plan that never stops early and probes at every checkpoint, up to ``max_tokens``."""
    return RequestPlan(
        request_id=question.id,
        policy_name="capture",
        policy_version=0,
        arm="production",
        exploration=True,
        load_mode="normal",
        segment_key=question.segment,
        rule=Rule(threshold=1.0, min_tokens=0, token_budget=max_tokens, explore=True),
    )


def capture_one(
    engine: LlamaEngine,
    question: Question,
    *,
    max_tokens: int,
    model: str,
    controller: Controller | None = None,
) -> TrajectoryRecord:
    """Generate ``question`` to its end with checkpoints; the record of it.

    ``probe_tokens`` is the mean probe cost per checkpoint, rounded up. A
    generation shorter than one checkpoint spacing gets one checkpoint at its
    end (the final extraction: the file format needs one), with the probe's
    upper bound as its cost.
    """
    from pipeline.serve.engine import Sampling  # noqa: PLC0415 - keeps llama_cpp lazy

    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question.question},
    ]
    prompt = engine.tokenize(engine.chat_prompt(messages))
    plan = exploration_plan(question, max_tokens)
    generation = engine.generate(
        prompt, plan, controller or Controller(), Sampling(max_tokens=max_tokens)
    )
    points = generation.trajectory
    tokens_full = max(1, generation.tokens_generated)
    if generation.tokens_probe:
        probe_tokens = math.ceil(generation.tokens_probe / len(points))
    else:  # no probe ran: a generation shorter than one checkpoint spacing
        probe_tokens = engine.probe.cost_per_probe
    if not points:  # the end's extraction is its one point (the file format needs one)
        end = Checkpoint(
            tokens=tokens_full, confidence=generation.confidence, answer=generation.answer[:1024]
        )
        points = (end,)
    return TrajectoryRecord(
        request_id=question.id,
        segment=question.segment,
        gold=question.gold,
        tokens_full=tokens_full,
        final_answer=generation.answer[:1024],
        checkpoints=points,
        question=question.question,
        tokens_prompt=generation.tokens_prompt,
        probe_tokens=probe_tokens,
        model=model,
        secs=round(generation.seconds, 4),
    )


def pending(questions: Iterable[Question], done: set[str]) -> list[Question]:
    """The questions not captured yet, in file order."""
    return [q for q in questions if q.id not in done]


def capture(
    engine: LlamaEngine,
    questions: Iterable[Question],
    out: Path,
    *,
    max_tokens: int,
    model: str,
) -> Iterator[TrajectoryRecord]:
    """Capture each question and append its line to ``out`` (flushed), yielding the records.

    Callers pass the :func:`pending` questions; this appends, it never rewrites.
    """
    controller = Controller()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        for question in questions:
            record = capture_one(
                engine, question, max_tokens=max_tokens, model=model, controller=controller
            )
            handle.write(record.to_line() + "\n")
            handle.flush()
            yield record
