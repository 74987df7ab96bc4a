"""Canary carriers as policy bodies (pure): what production and the canary share serve.

A canary is carried by a production version whose body holds both policies
(``segments`` for production traffic, ``candidate_segments`` for the
``canary_share`` of requests, ``candidate_version`` naming the candidate):
see docs/adr-003-canary.md.
"""

from __future__ import annotations

from schemas import PolicyBody


def running_canary(body: PolicyBody) -> int | None:
    """The candidate version ``body`` serves as a canary, or None."""
    if body.candidate_version is None or body.candidate_segments is None:
        return None
    return body.candidate_version if body.canary_share > 0 else None


def base_body(body: PolicyBody) -> PolicyBody:
    """``body`` without any canary: what production traffic gets."""
    return PolicyBody(segments=body.segments, exploration_share=body.exploration_share)


def canary_body(
    production: PolicyBody, candidate: PolicyBody, candidate_version: int, share: float
) -> PolicyBody:
    """The carrier: production's segments, plus the candidate's for ``share`` of requests."""
    return PolicyBody(
        segments=production.segments,
        exploration_share=production.exploration_share,
        canary_share=share,
        candidate_version=candidate_version,
        candidate_segments=candidate.segments,
    )


def promoted_body(carrier: PolicyBody) -> PolicyBody:
    """The candidate's policy for every request, ending the canary."""
    if carrier.candidate_segments is None:
        msg = "the production version carries no canary candidate"
        raise ValueError(msg)
    return PolicyBody(
        segments=carrier.candidate_segments, exploration_share=carrier.exploration_share
    )
