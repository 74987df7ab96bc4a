"""The review page of a real proposal: verdict numbers, every key, well-formed HTML."""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.controller.handover import to_registry
from pipeline.optimizer import ExplorationBatch, Proposal, Trajectory, optimize, review_reasons
from pipeline.registry.draft import PolicyDraft
from pipeline.registry.plot import write_pareto_png
from pipeline.registry.review_page import (
    description,
    page_html,
    page_markdown,
    verdict,
    weights,
)
from pipeline.sim import sample_segment, scenario
from schemas import LoadMode
from tests.unit._optimizer_data import spec_with

MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")
SIZES = {"acme/qa/short": 6000, "acme/math/short": 1500, "globex/qa/long": 200}
SPEC = spec_with(max_step=1.0)
STEP = SPEC.model_copy(update={"max_step": 0.03})
FLAG = "drift alarm on acme/qa/short: its certificate restarted"


def _batch(key: str, n: int) -> ExplorationBatch:
    return ExplorationBatch.from_trajectories(
        Trajectory(lat.tokens, lat.confidence, lat.correct, lat.correct[-1], lat.tokens[-1])
        for lat in sample_segment(scenario("standard"), key, 3, n)
    )


@pytest.fixture(scope="module")
def proposal() -> Proposal:
    """From production at the free targets, except acme/math/short held at 0.97."""
    samples = {key: _batch(key, n) for key, n in SIZES.items()}
    free = optimize(SPEC, samples)
    held = free.body.segments["acme/math/short"].model_copy(
        update={"thresholds": dict.fromkeys(MODES, 0.97)}
    )
    current = free.body.model_copy(
        update={"segments": {**free.body.segments, "acme/math/short": held}}
    )
    return optimize(STEP, samples, current)


@pytest.fixture(scope="module")
def draft(proposal: Proposal) -> PolicyDraft:
    return to_registry(proposal, STEP, flags=[FLAG])


def _saving_at(proposal: Proposal, population: str, threshold: float) -> float:
    return next(
        p.token_saving
        for p in proposal.pareto[population]
        if p.threshold == pytest.approx(threshold)
    )


def test_the_verdict_carries_the_proposal_s_numbers(proposal: Proposal, draft: PolicyDraft) -> None:
    assert draft.facts is not None and draft.description == ""
    line = verdict(draft.facts, draft.review)
    # Every sample belongs to a leaf key here, so leaves weigh their own samples.
    leaves = [proposal.decision(key, "normal") for key in SIZES]
    total = sum(d.samples for d in leaves)
    saving = sum(d.samples * d.token_saving for d in leaves) / total
    production = (
        sum(d.samples * _saving_at(proposal, d.population or "", d.current) for d in leaves) / total
    )
    assert f"expected tokens saved {saving:.1%} vs {production:.1%} in production" in line
    stopping = [d for d in proposal.decisions if d.threshold < 1.0]
    top = max(stopping, key=lambda d: d.em_drop_bound)
    assert f"largest EM-drop bound {top.em_drop_bound:.4f} ({top.key}, " in line
    moved = {d.key for d in proposal.decisions if d.threshold != d.current}
    assert moved == {"acme/math/short"}  # the only key production held back
    assert f"1 of {len(proposal.body.segments)} keys change" in line
    reasons = review_reasons(proposal, STEP)
    assert line.startswith("Needs review: ") and f"Reasons ({len(reasons)}): {reasons[0]}" in line
    assert "1 flag." in line


def test_every_key_appears_with_its_moves_guarantee_and_step_limit(
    proposal: Proposal, draft: PolicyDraft
) -> None:
    assert draft.facts is not None
    page = page_markdown(draft.facts, draft.review, policy_name="default", plot=None)
    changes = page.split("## Keys that change (1)")[1].split("## Keys that stay")[0]
    math = proposal.decision("acme/math/short", "peak")
    assert math.step_limited and math.threshold == pytest.approx(0.94)
    assert "`acme/math/short` | offpeak | 0.97 → 0.94 " in changes
    assert f"| yes: {math.proposed:g} " in changes
    stay = page.split("## Keys that stay")[1]
    for key in proposal.body.segments:
        assert page.count(f"`{key}`") >= 1
        if key != "acme/math/short":
            assert f"| `{key}` " in stay
    pooled = proposal.decision("globex/qa/long", "normal")
    assert pooled.guarantee == "pooled"
    assert f"| {pooled.population_samples} in `qa` | pooled " in stay
    for reason in review_reasons(proposal, STEP):
        assert f"- {reason}\n" in page
    assert f"- {FLAG}\n" in page
    assert "## Certification" in page and "delta 0.1 split by segments" in page


def test_a_key_s_own_exploration_share_shows_else_the_policy_s(draft: PolicyDraft) -> None:
    assert draft.facts is not None
    keys = [
        dataclasses.replace(k, exploration_share=0.02) if k.key == "acme/math/short" else k
        for k in draft.facts.keys
    ]
    facts = dataclasses.replace(draft.facts, keys=keys)
    page = page_markdown(facts, draft.review, policy_name="default", plot=None)
    row = next(line for line in page.splitlines() if line.startswith("| `acme/math/short`"))
    assert row.rstrip(" |").endswith("0.02")
    other = next(line for line in page.splitlines() if line.startswith("| `global`"))
    assert other.rstrip(" |").endswith("policy")
    assert "or the policy's (0.05)" in page


class _Strict(HTMLParser):
    """Collects tags and fails on mismatched nesting."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unexpected </{tag}> at {self.getpos()}")


def test_the_html_is_well_formed_and_self_contained(draft: PolicyDraft, tmp_path: Path) -> None:
    assert draft.facts is not None
    png = write_pareto_png(draft.pareto, tmp_path / "pareto.png").read_bytes()
    page = page_html(draft.facts, draft.review, policy_name="default", plot_png=png)
    parser = _Strict()
    parser.feed(page)
    parser.close()
    assert parser.problems == [] and parser.stack == []
    (src,) = parser.images
    assert base64.b64decode(src.removeprefix("data:image/png;base64,")) == png
    assert "<style>" in page and not re.search(r"<(script|link)\b|src=\"http", page)
    # The HTML is the Markdown rendered: the verdict and every table row's key are in it.
    line = verdict(draft.facts, draft.review)
    assert html.escape(line, quote=False) in page
    # Three tables' header rows, three load modes in the summary, a row per key and mode.
    assert page.count("<tr>") == 3 + 3 + len(draft.facts.keys) * 3


def test_the_description_is_the_verdict_and_points_at_the_page(draft: PolicyDraft) -> None:
    assert draft.facts is not None
    text = description(draft.facts, draft.review, "offline calibration")
    first, rest = text.split("\n\n", 1)
    assert first == verdict(draft.facts, draft.review)
    assert "`review/review.html`" in rest and rest.endswith("offline calibration")


def test_a_task_key_weighs_only_the_samples_no_leaf_key_serves(draft: PolicyDraft) -> None:
    assert draft.facts is not None
    w = weights(draft.facts)
    assert w == {**{k: float(n) for k, n in SIZES.items()}, "qa": 0.0, "math": 0.0, "global": 0.0}
    without_leaf = dataclasses.replace(
        draft.facts, keys=[k for k in draft.facts.keys if k.key != "globex/qa/long"]
    )
    assert weights(without_leaf)["qa"] == 200.0


def test_a_schedule_shows_in_the_row_and_counts_as_a_change(draft: PolicyDraft) -> None:
    from pipeline.registry.review_page import changed

    assert draft.facts is not None
    key = next(k for k in draft.facts.keys if k.key == "acme/qa/short")
    assert not changed(key)
    normal = next(m for m in key.modes if m.mode == "normal")
    scheduled = dataclasses.replace(normal, schedule=(128, 0.54))
    key = dataclasses.replace(key, modes=[scheduled if m is normal else m for m in key.modes])
    assert changed(key)  # same threshold, a schedule added: the reviewer must see it
    facts = dataclasses.replace(
        draft.facts, keys=[key if k.key == key.key else k for k in draft.facts.keys]
    )
    page = page_markdown(facts, draft.review, policy_name="default", plot=None)
    before = f"{normal.proposed:g}"
    row = rf"\|\s+normal\s+\|\s+{before} → {before}, 0\.54 from 128 tokens\s+\|"
    assert re.search(row, page), page
