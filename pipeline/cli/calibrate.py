"""`pipeline calibrate FILE.jsonl`: certify a first policy from offline labeled trajectories.

The cold start: before live traffic, a trajectory file (``schemas/trajectory.py``,
one request run to its natural end per line) is certified under the policy
spec the way the controller certifies exploration samples
(:mod:`pipeline.optimizer.offline`). It prints the rule of every key and load
mode, writes the policy body (``--out``) and can register it in MLflow as the
``candidate`` for a reviewer (``--register``; it needs ``pipeline up``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from pipeline.cli._app import app, console, err_console
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError
from pipeline.optimizer.errors import OptimizerError
from schemas.trajectory import TrajectoryRecord

if TYPE_CHECKING:
    from pipeline.optimizer.offline import Calibration

FILE = typer.Argument(..., help="Trajectory file: one JSON record per line.")
SPEC = typer.Option(None, "--spec", help="Policy spec YAML (default: controller settings).")
EPSILON = typer.Option(None, "--epsilon", help="Tolerated EM drop in every load mode.")
DELTA = typer.Option(None, "--delta", help="Risk level of each certificate.")
MIN_TOKENS = typer.Option(
    None,
    "--min-tokens",
    help="No early stop before this many tokens; several, comma-separated (8,16,32), "
    "let each segment choose one (delta is shared by the candidates).",
)
MIN_SAMPLES = typer.Option(
    None, "--min-samples", help="Fewer samples pool a segment into its parent (spec: 400)."
)


class MethodOpt(StrEnum):
    """How the file is certified."""

    ltt = "ltt"
    signed = "signed"
    anytime = "anytime"


METHOD = typer.Option(
    MethodOpt.ltt,
    "--method",
    help="ltt: one look (Learn-then-Test, one-sided loss); signed: one look at the signed "
    "EM drop; anytime: the controller's certificates.",
)
OUT = typer.Option(None, "--out", help="Write the policy body (JSON) here.")
REGISTER = typer.Option(
    False, "--register", help="Register it in MLflow as the pending `candidate` version."
)
AS_JSON = typer.Option(False, "--json", help="Print the results as JSON.")


def records_from_lines(lines: Iterable[str], source: str) -> list[TrajectoryRecord]:
    """Parse a trajectory file's lines; blank lines are skipped.

    Raises:
        OptimizerError: naming ``source``, the line number and the reason, at the
            first line that is not a valid record or repeats a ``request_id``.
    """
    records: list[TrajectoryRecord] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = TrajectoryRecord.from_line(line)
        except ValidationError as exc:
            reason = "; ".join(_problem(e) for e in exc.errors())
            msg = f"{source}:{number}: not a trajectory record: {reason}"
            raise OptimizerError(msg) from None
        if record.request_id in seen:
            first = seen[record.request_id]
            msg = f"{source}:{number}: request_id {record.request_id!r} repeats line {first}"
            raise OptimizerError(msg)
        seen[record.request_id] = number
        records.append(record)
    return records


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def read_records(path: Path) -> list[TrajectoryRecord]:
    """The records of a trajectory file.

    Raises:
        ConfigError: if the file cannot be read or holds no record.
        OptimizerError: at the first malformed line (file, line number, reason).
    """
    try:
        with path.open(encoding="utf-8") as lines:
            records = records_from_lines(lines, str(path))
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read trajectory file {path}: {exc}"
        raise ConfigError(msg) from None
    if not records:
        msg = f"trajectory file {path} holds no record"
        raise ConfigError(msg)
    return records


def parse_min_tokens(text: str | None) -> list[int]:
    """``--min-tokens``: one count or comma-separated candidates ([] when not given).

    Raises:
        ConfigError: naming the option, on anything but non-negative integers.
    """
    if text is None:
        return []
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = [-1]
    if not values or min(values) < 0:
        msg = f"--min-tokens must be a count or comma-separated counts (8,16,32), got {text!r}"
        raise ConfigError(msg)
    return sorted(set(values))


@app.command("calibrate")
def calibrate_command(
    file: Path = FILE,
    spec: Path | None = SPEC,
    epsilon: float | None = EPSILON,
    delta: float | None = DELTA,
    min_tokens: str | None = MIN_TOKENS,
    min_samples: int | None = MIN_SAMPLES,
    method: MethodOpt = METHOD,
    out: Path | None = OUT,
    register: bool = REGISTER,
    as_json: bool = AS_JSON,
) -> None:
    """Certify a first policy from labeled trajectories (cold start), per segment and mode."""
    from pipeline.controller.config import controller_settings
    from pipeline.optimizer import load_spec
    from pipeline.optimizer.offline import calibrate, calibration_spec, samples_from_records

    settings = load_settings()
    base = load_spec(spec or controller_settings(settings).spec_path)
    candidates = parse_min_tokens(min_tokens)
    records = read_records(file)
    chosen = calibration_spec(
        base,
        epsilon=epsilon,
        delta=delta,
        min_tokens=candidates[0] if len(candidates) == 1 else None,
        min_samples=min_samples,
        method=method.value,
    )
    result = calibrate(
        chosen, samples_from_records(records), min_tokens=candidates if len(candidates) > 1 else ()
    )
    say = err_console if as_json else console
    if out is not None:
        try:
            out.write_text(result.body.model_dump_json(indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            msg = f"cannot write the policy to {out}: {exc}"
            raise ConfigError(msg) from None
        say.print(f"wrote the policy body to {out}", highlight=False)
    version = None
    if register:
        # MLflow prints to stdout (the run's address): keep stdout for the results.
        with contextlib.redirect_stdout(sys.stderr):
            version = _register(settings, result, file, len(records))
    if as_json:
        data = {"source": str(file), "trajectories": len(records), **result.to_json()}
        typer.echo(json.dumps({**data, "registered_version": version}, indent=2))
        return
    console.print(_table(result, file, len(records)))
    if version is not None:
        name = settings.control.model_name(chosen.name)
        console.print(
            f"registered {name} v{version} as `candidate`, pending review: "
            f"a reviewer runs `pipeline policy approve candidate --policy {chosen.name} "
            "--reason ...`",
            highlight=False,
        )


def _table(result: Calibration, file: Path, records: int) -> Table:
    spec = result.spec
    table = Table(
        title=(
            f"{file}: {records} trajectories; {spec.name}: {spec.risk.method}, "
            f"{spec.risk.loss} loss, delta {spec.risk.delta:g}, min_samples {spec.min_samples}"
        ),
        title_justify="left",
    )
    columns = ("segment", "mode", "threshold", "min_tokens", "certified", "population")
    for col in (*columns, "samples", "epsilon", "saving", "gross", "EM drop", "bound", "note"):
        table.add_column(col)
    rows: dict[str, list[Any]] = {}
    for r in result.results:
        rows.setdefault(r.key, []).append(r)
    for key, found in rows.items():
        same = len({r.model_dump_json(exclude={"mode"}) for r in found}) == 1
        for r in found[:1] if same else found:
            table.add_row(
                key,
                "all" if same else r.mode,
                f"{r.threshold:.2f}" + (" (off)" if r.threshold >= 1.0 else ""),
                str(r.min_tokens),
                "yes" if r.certified else "no",
                f"{r.population or '-'} ({r.guarantee})",
                str(r.samples),
                f"{r.epsilon:g}",
                f"{r.saving:.1%}",
                f"{r.gross_saving:.1%}",
                f"{r.em_drop:+.3f}",
                f"{r.em_drop_bound:.3f}",
                r.note,
            )
    return table


def _register(settings: Settings, result: Calibration, file: Path, records: int) -> int:
    """Register the body as a pending ``candidate`` version, as a controller cycle would."""
    from pipeline.audit import KafkaAuditLog
    from pipeline.controller import plan
    from pipeline.controller.handover import to_registry
    from pipeline.node.verify import Limits
    from pipeline.registry.client import connect
    from pipeline.registry.draft import ReviewDecision
    from pipeline.registry.policies import register_proposal
    from pipeline.registry.versions import mlflow_errors

    spec = result.spec
    problem = plan.budget_problem(spec, settings.node.max_token_budget) or plan.body_problem(
        result.body, Limits.from_settings(settings.node)
    )
    if problem:
        msg = f"calibrated policy not registered: nodes would refuse it: {problem}"
        raise ConfigError(msg)
    draft = to_registry(result.proposal, spec)
    metrics = {key: dict(values) for key, values in draft.segment_metrics.items()}
    for r in result.results:  # token_saving is the population's; this, the key's own rows'
        metrics.setdefault(r.key, {})[f"{r.mode}_own_saving"] = r.saving
    draft = dataclasses.replace(
        draft,
        # A first policy comes from offline data, not the fleet's traffic: always reviewed.
        review=ReviewDecision(
            auto_approve=False, reason=f"offline calibration from {file.name}: needs a reviewer"
        ),
        params={
            **draft.params,
            "source": str(file),
            "trajectories": records,
            "origin": "calibrate",
        },
        segment_metrics=metrics,
        description=f"offline calibration from {file} ({records} trajectories)",
    )
    model_name = settings.control.model_name(spec.name)
    client = connect(settings.mlflow)  # one line (RegistryError) when MLflow is unreachable
    audit = KafkaAuditLog(settings.kafka, settings.control.audit_topic)
    try:
        audit.check()
        with mlflow_errors(f"registering the calibration of {spec.name}"):
            done = register_proposal(
                client,
                draft,
                experiment=settings.mlflow.experiment,
                model_name=model_name,
                allow_auto_approve=False,
                audit=audit,
            )
    finally:
        audit.close()
    return done.version.version
