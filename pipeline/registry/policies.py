"""Registering policy versions: a run with everything a reviewer needs, and a model version.

Each version is an MLflow run in the configured experiment (params, metrics,
the policy artifact ``policy/policy.json``, the Pareto plot and, for an
optimizer's proposal, the review page ``review/review.html`` and ``.md``)
whose pyfunc model is registered as a version of the policy family's
registered model; its description starts with the page's one-line verdict.
The version number is the policy version on the control topic (ADR 002).

A version is created with all its review tags at once, so no reader ever
sees it without a review state. Registration waits until MLflow reports it
``READY``.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import schemas
from pipeline.audit import AuditSink
from pipeline.errors import RegistryError
from pipeline.registry import names
from pipeline.registry.client import ensure_experiment, ensure_registered_model
from pipeline.registry.draft import PolicyDraft, ReviewDecision, ReviewFacts
from pipeline.registry.plot import write_pareto_png
from pipeline.registry.review_page import description as page_description
from pipeline.registry.review_page import page_html, page_markdown
from pipeline.registry.tags import now_iso, promotion_tags, record_audit
from pipeline.registry.transitions import READY
from pipeline.registry.versions import VersionRecord, get_version, policy_sha256
from schemas import PolicyBody

log = logging.getLogger(__name__)

MAX_PARAM_CHARS: Final = 6000  # MLflow's limit on a param value
_MODEL_SCRIPT: Final = Path(__file__).with_name("policy_model.py")


@dataclass(frozen=True, slots=True)
class Registered:
    """What a registration produced."""

    run_id: str
    version: VersionRecord
    promoted: bool
    """True when it was auto-approved and is now ``production``."""


@contextmanager
def _tracking(client: Any) -> Iterator[None]:
    # The fluent API (log_model needs it) reads a global URI; use the client's, then restore.
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, int | float) and math.isfinite(value):
            out[key] = float(value)
        else:
            log.warning("metric %s=%r is not a finite number; not logged", key, value)
    return out


def run_metrics(proposal: PolicyDraft) -> dict[str, float]:
    """The run metrics of ``proposal``: its own, then per segment, with sanitized names."""
    flat = dict(names.sanitize_names(_finite(proposal.metrics)))
    for segment, values in proposal.segment_metrics.items():
        for metric, value in _finite(values).items():
            flat[names.segment_metric_name(segment, metric)] = value
    return flat


def run_params(params: Mapping[str, object]) -> dict[str, str]:
    """Params as MLflow stores them: sanitized keys, string values cut to 6000 chars."""
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in names.sanitize_names(params).items()}


def _schemas_code(tmp: Path) -> Path:
    # The model carries the contracts as code, so it loads without this repository.
    target = tmp / "code" / "schemas"
    target.mkdir(parents=True)
    for source in Path(schemas.__file__).parent.glob("*.py"):
        shutil.copy2(source, target / source.name)
    return target


def _log_model(policy_file: Path, code: Path, body: PolicyBody) -> Any:
    import mlflow.pyfunc
    import pandas as pd  # type: ignore[import-untyped]  # pandas ships no type information
    import pydantic
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "segment"),
                ColSpec("string", "load_mode"),
                ColSpec("long", "tokens"),
            ]
        ),
        outputs=Schema([ColSpec("double", "threshold"), ColSpec("string", "policy_key")]),
    )
    example = pd.DataFrame(
        {
            "segment": ["global"],
            "load_mode": ["normal"],
            "tokens": [body.segments["global"].min_tokens],
        }
    )
    return mlflow.pyfunc.log_model(
        name=names.MODEL_NAME,
        python_model=str(_MODEL_SCRIPT),
        artifacts={names.MODEL_POLICY_KEY: str(policy_file)},
        code_paths=[str(code)],
        # Explicit, so MLflow does not resolve an environment at log time.
        pip_requirements=[
            f"mlflow=={mlflow.__version__}",
            f"pandas=={pd.__version__}",
            f"pydantic=={pydantic.VERSION}",
        ],
        signature=signature,
        input_example=example,
    )


def log_policy_version(
    client: Any,
    *,
    experiment: str,
    model_name: str,
    policy_name: str,
    body: PolicyBody,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    run_name: str,
    plot: Path | None = None,
    review: Path | None = None,
    description: str = "",
) -> tuple[str, VersionRecord]:
    """Log one run (params, metrics, policy, plot, review page, pyfunc model) and register it.

    ``review`` is a folder whose files are logged under ``review/``.

    ``params`` and ``metrics`` must already carry valid MLflow names. The
    version is created with ``tags`` plus the policy name and digest.

    Returns:
        The run id and the READY version.

    Raises:
        RegistryError: if the version does not become READY.
    """
    import mlflow

    experiment_id = ensure_experiment(client, experiment)
    ensure_registered_model(client, model_name, f"early-stopping policy {policy_name!r}")
    raw = body.model_dump_json(indent=2).encode()
    with tempfile.TemporaryDirectory(prefix="proposal-") as tmp_dir, _tracking(client):
        tmp = Path(tmp_dir)
        policy_file = tmp / names.POLICY_FILE
        policy_file.write_bytes(raw)
        code = _schemas_code(tmp)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=True) as run:
            run_id = run.info.run_id
            mlflow.set_tags({names.T_POLICY_NAME: policy_name, "model_name": model_name})
            if params:
                mlflow.log_params(dict(params))
            mlflow.log_artifact(str(policy_file), names.POLICY_DIR)
            if plot is not None:
                mlflow.log_artifact(str(plot), names.PLOT_DIR)
            if review is not None:
                mlflow.log_artifacts(str(review), names.REVIEW_DIR)
            # The model first: MLflow links a run's existing metrics to a model it logs
            # with one history read per metric (a hundred requests for a large policy);
            # logged afterwards with its id, they are linked in one batch.
            info = _log_model(policy_file, code, body)
            if metrics:
                mlflow.log_metrics(dict(metrics), model_id=info.model_id)
    all_tags = {
        **tags,
        names.T_POLICY_NAME: policy_name,
        names.T_POLICY_SHA256: policy_sha256(raw),
    }
    mv = client.create_model_version(
        model_name,
        source=info.model_uri,
        run_id=run_id,
        tags=all_tags,
        description=description[:5000] or None,
        model_id=info.model_id,
    )
    record = get_version(client, model_name, int(mv.version))
    if record.status != READY:
        msg = f"{model_name} v{record.version} is {record.status}, not {READY}, after registration"
        raise RegistryError(msg)
    return run_id, record


def _write_page(
    facts: ReviewFacts, name: str, review: ReviewDecision, plot: Path, folder: Path
) -> Path:
    # The Markdown points at the plot artifact; the HTML carries it inline.
    folder.mkdir()
    markdown = page_markdown(facts, review, policy_name=name, plot=f"../{names.PLOT_ARTIFACT}")
    (folder / Path(names.REVIEW_MD).name).write_text(markdown, encoding="utf-8")
    page = page_html(facts, review, policy_name=name, plot_png=plot.read_bytes())
    (folder / Path(names.REVIEW_HTML).name).write_text(page, encoding="utf-8")
    return folder


def register_proposal(
    client: Any,
    proposal: PolicyDraft,
    *,
    experiment: str,
    model_name: str,
    allow_auto_approve: bool = True,
    audit: AuditSink | None = None,
) -> Registered:
    """Register ``proposal`` as a new version with alias ``candidate``.

    When its review decision says it is within the auto-approve bounds and
    ``allow_auto_approve`` holds, it is promoted at once (``production``
    moves to it, tagged ``who=auto``); otherwise it stays ``pending``.

    Args:
        client: An ``MlflowClient`` (see :func:`pipeline.registry.client.connect`).
        proposal: What the optimizer produced.
        experiment: MLflow experiment of the runs.
        model_name: Registered model of the policy family.
        allow_auto_approve: The operator's switch (``ControlSettings.auto_approve``).
        audit: Where to record ``proposed`` / ``auto_approved`` events.

    Raises:
        RegistryError: if MLflow refuses a step.
    """
    at = now_iso()
    auto = proposal.review.auto_approve and allow_auto_approve
    why = proposal.review.reason or ("within auto-approve bounds" if auto else "needs review")
    if proposal.review.auto_approve and not allow_auto_approve:
        why = f"auto-approve is switched off; {why}"
    tags = {
        names.T_REVIEW_STATE: "pending",
        names.T_PROPOSED_AT: at,
        names.T_PROPOSAL_REASON: why,
    }
    if auto:
        tags.update(promotion_tags(names.AUTO, why, "auto_approved", at))
    decided = ReviewDecision(auto_approve=auto, reason=why)
    with tempfile.TemporaryDirectory(prefix="pareto-") as tmp:
        plot = write_pareto_png(
            proposal.pareto, Path(tmp) / names.PLOT_FILE, f"{proposal.policy_name} proposal"
        )
        review, description = None, proposal.description
        if proposal.facts is not None:
            folder = Path(tmp) / names.REVIEW_DIR
            review = _write_page(proposal.facts, proposal.policy_name, decided, plot, folder)
            description = page_description(proposal.facts, decided, proposal.description)
        run_id, record = log_policy_version(
            client,
            experiment=experiment,
            model_name=model_name,
            policy_name=proposal.policy_name,
            body=proposal.body,
            params=run_params({**proposal.params, "auto_approve": auto}),
            metrics=run_metrics(proposal),
            tags=tags,
            run_name=f"{proposal.policy_name}-{at}",
            plot=plot,
            review=review,
            description=description,
        )
    client.set_registered_model_alias(model_name, names.CANDIDATE, str(record.version))
    name = proposal.policy_name
    record_audit(audit, "proposed", record, policy_name=name, actor=names.OPTIMIZER, why=why)
    if auto:
        client.set_registered_model_alias(model_name, names.PRODUCTION, str(record.version))
        record_audit(audit, "auto_approved", record, policy_name=name, actor=names.AUTO, why=why)
    return Registered(run_id, get_version(client, model_name, record.version), promoted=auto)
