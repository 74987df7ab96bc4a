"""`pipeline capture QUESTIONS.jsonl --out TRAJ.jsonl`: real trajectories from a real model.

Runs each labeled question through llama.cpp (:mod:`pipeline.serve.capture`)
to its natural end, with a trial-answer probe every ``--check-every`` tokens,
and appends one trajectory record per question to ``--out``. Resumable:
questions whose id is already in the output are skipped.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.cli._app import app, console

QUESTIONS = typer.Argument(..., help="Question file: JSON lines with id, segment, question, gold.")
OUT = typer.Option(..., "--out", help="Trajectory file to append to (created if missing).")
MODEL = typer.Option(None, "--model", help="GGUF model file (default: the packaged SmolLM2).")
MAX_TOKENS = typer.Option(256, "--max-tokens", min=1, help="Generation budget per question.")
CHECK_EVERY = typer.Option(8, "--check-every", min=1, help="Tokens between checkpoints.")
THREADS = typer.Option(None, "--threads", min=1, help="CPU threads (default: llama.cpp's).")
LIMIT = typer.Option(None, "--limit", min=1, help="Capture at most this many new questions.")


@app.command("capture")
def capture_command(
    questions: Path = QUESTIONS,
    out: Path = OUT,
    model: Path | None = MODEL,
    max_tokens: int = MAX_TOKENS,
    check_every: int = CHECK_EVERY,
    threads: int | None = THREADS,
    limit: int | None = LIMIT,
) -> None:
    """Capture QUESTIONS through the model into trajectory records (resumes by id)."""
    from pipeline.serve.capture import capture, done_ids, pending, read_questions
    from pipeline.serve.engine import LlamaEngine
    from pipeline.serve.model import default_model_path, model_name
    from pipeline.stream.em import exact_match

    asked = read_questions(questions)
    already = done_ids(out)
    todo = pending(asked, already)
    skipped = len(asked) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    if not todo:
        console.print(f"nothing to capture: all {len(asked)} questions are in {out}")
        return
    path = model or default_model_path()
    engine = LlamaEngine(path, check_every=check_every, n_threads=threads)
    name = model_name(path)
    console.print(
        f"capturing {len(todo)} questions with {name} (max {max_tokens} tokens, "
        f"a checkpoint every {check_every}); {skipped} already in {out}"
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    correct = tokens = 0
    seconds = 0.0
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("capturing", total=len(todo))
        for count, record in enumerate(
            capture(engine, todo, out, max_tokens=max_tokens, model=name), start=1
        ):
            correct += exact_match(record.final_answer, record.gold)
            tokens += record.tokens_full
            seconds += record.secs or 0.0
            progress.update(
                task, advance=1, description=f"{record.request_id}: EM {correct}/{count}"
            )
    done = len(todo)
    console.print(
        f"captured {done} questions into {out}: EM of the full generations {correct / done:.1%}, "
        f"{tokens / done:.1f} tokens and {seconds / done:.2f}s per question"
    )
