"""Names shared by the registry, the review commands and the publisher (pure).

Aliases, tag keys, review states, artifact paths, and the sanitizing of
metric and parameter names into what MLflow accepts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final, Literal, TypeVar, get_args

PRODUCTION: Final = "production"
CANDIDATE: Final = "candidate"

POLICY_DIR: Final = "policy"
POLICY_FILE: Final = "policy.json"
POLICY_ARTIFACT: Final = f"{POLICY_DIR}/{POLICY_FILE}"
"""The policy as a run artifact: ``PolicyBody`` JSON."""
PLOT_DIR: Final = "plots"
PLOT_FILE: Final = "pareto.png"
PLOT_ARTIFACT: Final = f"{PLOT_DIR}/{PLOT_FILE}"
REVIEW_DIR: Final = "review"
REVIEW_HTML: Final = f"{REVIEW_DIR}/review.html"
"""The review page as a run artifact: self-contained HTML (MLflow previews it)."""
REVIEW_MD: Final = f"{REVIEW_DIR}/review.md"
"""The same page as Markdown (what ``pipeline policy show`` prints)."""
MODEL_NAME: Final = "policy_model"
"""Name of the logged pyfunc model inside the run."""
MODEL_POLICY_KEY: Final = "policy"
"""Key of the policy file among the pyfunc model's artifacts."""

ReviewState = Literal["pending", "approved", "auto_approved", "rejected", "rolled_back"]
REVIEW_STATES: Final[tuple[str, ...]] = get_args(ReviewState)
PUBLISHABLE: Final = frozenset({"approved", "auto_approved"})
"""Review states the publisher may put on the control topic."""
AUTO: Final = "auto"
"""The actor of an automatic approval."""
OPTIMIZER: Final = "optimizer"
"""The actor of a proposal."""

# Model version tags.
T_REVIEW_STATE: Final = "review_state"
T_POLICY_NAME: Final = "policy_name"
T_POLICY_SHA256: Final = "policy_sha256"
T_PROPOSED_AT: Final = "proposed_at"
T_PROPOSAL_REASON: Final = "proposal_reason"
T_WHO: Final = "who"
"""Who put this version into production (a reviewer, or ``auto``)."""
T_WHEN: Final = "when"
T_WHY: Final = "why"
T_PROMOTED_AT: Final = "promoted_at"
T_APPROVED_BY: Final = "approved_by"
T_APPROVED_AT: Final = "approved_at"
T_APPROVE_REASON: Final = "approve_reason"
T_REJECTED_BY: Final = "rejected_by"
T_REJECTED_AT: Final = "rejected_at"
T_REJECT_REASON: Final = "reject_reason"
T_ROLLED_BACK_BY: Final = "rolled_back_by"
T_ROLLED_BACK_AT: Final = "rolled_back_at"
T_ROLLBACK_REASON: Final = "rollback_reason"
T_REPLACED_BY: Final = "replaced_by"
"""On a rolled-back version: the version that replaced it."""
T_ROLLBACK_OF: Final = "rollback_of"
T_RESTORES: Final = "restores"
T_PUBLISHED_AT: Final = "published_at"
T_PUBLISHED_CHECKSUM: Final = "published_checksum"
T_PUBLISH_REFUSED: Final = "publish_refused"
"""Why the publisher refuses to publish the version (e.g. its approver is no reviewer)."""

SEGMENT_METRIC_PREFIX: Final = "segment"
MAX_NAME_CHARS: Final = 250  # MLflow's limit on metric and param keys

_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.\- /]")

MAX_TAG_CHARS: Final = 5000  # MLflow's limit on a tag value
CONTROLLER: Final = "controller"
"""The actor of every move the controller makes (tags ``who``, audit ``actor``)."""

# Tags of canaries: on carriers, candidates and promotions (docs/adr-003-canary.md).
T_CANARY_OF: Final = "canary_of"
"""On a carrier version: the candidate version it serves to the canary share."""
T_CANARY_BASE: Final = "canary_base"
"""On a carrier version: the production version it started from (0: the safe default)."""
T_CANARY_STATE: Final = "canary_state"
"""On a candidate: ``running``, ``promoted`` or ``rolled_back``."""
T_CANARY_CARRIER: Final = "canary_carrier"
"""On a candidate: the version that carried its canary."""
T_CANARY_VERDICT: Final = "canary_verdict"
T_CANARY_EVIDENCE: Final = "canary_evidence"
T_PROMOTES: Final = "promotes"
"""On a promotion version: the candidate whose policy it serves to everyone."""


def sanitize_name(raw: str) -> str:
    """Map ``raw`` to a metric or param name MLflow accepts, keeping it readable.

    MLflow accepts ASCII letters, digits, ``_ . - /`` and spaces (colons only
    off Windows, so they are replaced too), and refuses names that are not
    already normal paths (``a//b``, ``./a``, ``a/..``, a leading ``/``).
    Other characters become ``_``; empty and dot-only path parts are dropped
    or replaced; a name over 250 characters is cut and given a hash suffix.
    """
    parts = [_BAD_CHARS.sub("_", part).strip() for part in raw.split("/")]
    parts = [("_" + part if set(part) == {"."} else part) for part in parts if part]
    name = "/".join(parts) or "_"
    if len(name) > MAX_NAME_CHARS:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME_CHARS - 9].rstrip('/')}_{digest}"
    return name


V = TypeVar("V")


def sanitize_names(values: Mapping[str, V]) -> dict[str, V]:
    """Sanitize every key; keys that collide after sanitizing get a hash suffix.

    Deterministic: keys that are valid as they are keep their name; the
    others follow in sorted order, and the first to claim a name keeps it.
    """
    out: dict[str, V] = {}
    for raw in sorted(values, key=lambda r: (sanitize_name(r) != r, r)):
        name = sanitize_name(raw)
        if name in out:
            digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
            name = f"{name[: MAX_NAME_CHARS - 9]}_{digest}"
        out[name] = values[raw]
    return out


def segment_metric_name(segment: str, metric: str) -> str:
    """The (sanitized) name of a per-segment metric: ``segment/<segment>/<metric>``."""
    return sanitize_name(f"{SEGMENT_METRIC_PREFIX}/{segment}/{metric}")


def split_segment_metric(name: str) -> tuple[str, str] | None:
    """``(segment, metric)`` of a name made by :func:`segment_metric_name`, else None."""
    head, _, rest = name.partition("/")
    segment, _, metric = rest.rpartition("/")
    if head != SEGMENT_METRIC_PREFIX or not segment or not metric:
        return None
    return segment, metric
