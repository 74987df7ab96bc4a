"""A proposal's review page (pure): one Markdown rendering, three outputs.

:func:`page_markdown` writes the page; the run's ``review/review.md`` is that
text, ``review/review.html`` is that text rendered by markdown-it with inline
CSS and the Pareto plot as a base64 PNG, and ``pipeline policy show`` prints
the logged Markdown to the terminal. So the three cannot disagree.

Expected savings are averaged over the policy's keys weighted by the
exploration samples each key serves itself (a task key serves only the
samples of its leaves that have no key of their own).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pipeline.registry import names
from pipeline.registry.draft import KeyFacts, ModeFacts, ReviewDecision, ReviewFacts
from schemas import segment_ancestors

MAX_REASONS_IN_VERDICT: Final = 2
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
"""What could start markup inside free text (reasons, flags); CommonMark drops the backslash."""
_CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; max-width: 80em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
blockquote { margin: 0; padding: .6em 1em; background: #f3f6fa; border-left: 4px solid #3b6ea5; }
table { border-collapse: collapse; font-size: .9em; margin: .5em 0; }
th, td { border: 1px solid #ccd; padding: .25em .6em; text-align: left; }
th { background: #eef1f5; } tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; border: 1px solid #ccd; }
code { background: #f2f2f2; padding: 0 .2em; }
"""


@dataclass(frozen=True, slots=True)
class ModeSummary:
    """Expected tokens saved in one load mode, over the keys whose production is measured."""

    mode: str
    saving: float | None
    production_saving: float | None
    coverage: float
    """Share of the samples the averages stand on (1.0: every key's)."""


@dataclass(frozen=True, slots=True)
class Bound:
    """The largest EM-drop bound among rules that stop early, and where."""

    value: float
    key: str
    mode: str
    epsilon: float


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _threshold(value: float) -> str:
    return "off" if value >= 1.0 else f"{value:g}"


def _rule(value: float, schedule: tuple[int, float] | None) -> str:
    if schedule is None:
        return _threshold(value)
    return f"{_threshold(value)}, {_threshold(schedule[1])} from {schedule[0]} tokens"


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.1%}"


def changed(key: KeyFacts) -> bool:
    """True when the key's threshold moves in some load mode."""
    return any(m.proposed != m.production or m.schedule != m.production_schedule for m in key.modes)


def weights(facts: ReviewFacts) -> dict[str, float]:
    """Samples each key serves itself: its own minus those of keys below it."""
    present = {k.key: float(k.modes[0].samples) if k.modes else 0.0 for k in facts.keys}
    served = dict(present)
    for key, n in present.items():
        parent = next((a for a in segment_ancestors(key)[1:] if a in present), None)
        if parent is not None:
            served[parent] -= n
    return {key: max(n, 0.0) for key, n in served.items()}


def mode_summaries(facts: ReviewFacts) -> list[ModeSummary]:
    """Per load mode, expected saving of the proposal and of production."""
    w = weights(facts)
    rows: dict[str, list[tuple[float, ModeFacts]]] = {}
    for key in facts.keys:
        for m in key.modes:
            rows.setdefault(m.mode, []).append((w[key.key], m))
    out = []
    for mode, found in rows.items():
        total = sum(weight for weight, _ in found)
        known = [(weight, m) for weight, m in found if m.production_saving is not None]
        base = sum(weight for weight, _ in known)
        if base <= 0:
            out.append(ModeSummary(mode, None, None, 0.0))
            continue
        saving = sum(weight * m.saving for weight, m in known) / base
        production = sum(weight * (m.production_saving or 0.0) for weight, m in known) / base
        out.append(ModeSummary(mode, saving, production, base / total))
    return out


def largest_bound(facts: ReviewFacts, mode: str | None = None) -> Bound | None:
    """The largest EM-drop bound of a proposed rule that stops early (in ``mode``, if given).

    None when no such rule stops early; ties go to the key listed first.
    """
    best: Bound | None = None
    for key in facts.keys:
        for m in key.modes:
            if m.proposed < 1.0 and (mode is None or m.mode == mode):
                if best is None or m.em_drop_bound > best.value:
                    best = Bound(m.em_drop_bound, key.key, m.mode, m.epsilon)
    return best


def reasons(review: ReviewDecision) -> list[str]:
    """The review reason split into its parts."""
    return [part for part in review.reason.split("; ") if part]


def _saving_phrase(summaries: Sequence[ModeSummary], lead: str) -> str:
    by_mode = {s.mode: s for s in summaries}
    head = by_mode.get(lead)
    if head is None or head.saving is None:
        return "expected tokens saved: not measured"
    phrase = (
        f"expected tokens saved {_pct(head.saving)} vs {_pct(head.production_saving)} "
        f"in production at {lead} load"
    )
    others = [
        f"{s.mode} {_pct(s.saving)} vs {_pct(s.production_saving)}"
        for s in summaries
        if s.mode != lead and s.saving is not None
    ]
    if others:
        phrase += f" ({', '.join(others)})"
    if head.coverage < 1.0:
        phrase += f", on {head.coverage:.0%} of samples"
    return phrase


def verdict(facts: ReviewFacts, review: ReviewDecision) -> str:
    """The page's one line: state, savings, largest bound, keys changed, why."""
    state = "Auto-approved" if review.auto_approve else "Needs review"
    bound = largest_bound(facts)
    bound_phrase = (
        "no rule stops early"
        if bound is None
        else f"largest EM-drop bound {bound.value:.4f} ({bound.key}, {bound.mode})"
    )
    moved = sum(changed(k) for k in facts.keys)
    keys_phrase = f"{moved} of {len(facts.keys)} keys change"
    if facts.dropped:
        keys_phrase += f", {len(facts.dropped)} dropped"
    why = reasons(review)
    why_phrase = "; ".join(why[:MAX_REASONS_IN_VERDICT])
    if len(why) > MAX_REASONS_IN_VERDICT:
        why_phrase += f" (+{len(why) - MAX_REASONS_IN_VERDICT} more)"
    parts = [_saving_phrase(mode_summaries(facts), facts.plot_mode), bound_phrase, keys_phrase]
    if facts.flags:
        parts.append(f"{len(facts.flags)} flag{'s' if len(facts.flags) > 1 else ''}")
    if review.auto_approve:
        return f"{state}: {'; '.join(parts)}. {why_phrase or 'within the bounds'}"
    return f"{state}: {'; '.join(parts)}. Reasons ({len(why)}): {why_phrase or 'none given'}"


def description(facts: ReviewFacts, review: ReviewDecision, extra: str = "") -> str:
    """The model version's description: the verdict, the page's artifact path, ``extra``."""
    text = (
        f"{verdict(facts, review)}\n\nReview page: run artifact `{names.REVIEW_HTML}` "
        f"(Markdown: `{names.REVIEW_MD}`; `pipeline policy show` prints it)."
    )
    return f"{text}\n\n{extra}" if extra else text


def _row(key: KeyFacts, m: ModeFacts, first: bool) -> list[str]:
    move = _rule(m.proposed, m.schedule)
    before = _rule(m.production, m.production_schedule)
    threshold = move if move == before else f"{before} → {move}"
    pooled = "-"
    if m.population is None:
        pooled = "none large enough"
    elif m.population != key.key:
        pooled = f"{m.population_samples} in `{m.population}`"
    saving = _pct(m.saving)
    if m.production_saving is not None and move != before:
        saving = f"{_pct(m.production_saving)} → {saving}"
    share = ""
    if first:
        share = "policy" if key.exploration_share is None else f"{key.exploration_share:g}"
    return [
        f"`{key.key}`" if first else "",
        m.mode,
        threshold,
        str(m.samples),
        pooled,
        m.guarantee,
        saving,
        f"{m.em_drop_bound:.4f}",
        f"{m.epsilon:g}",
        f"yes: {_threshold(m.chosen)}" if m.step_limited else "no",
        share,
    ]


_COLUMNS: Final = (
    "key",
    "mode",
    "threshold",
    "samples",
    "pooled",
    "guarantee",
    "tokens saved",
    "EM-drop bound",
    "ε",
    "step-limited",
    "exploration",
)
_LEGEND: Final = (
    'threshold: production → proposed (off: never stops early; "0.8, 0.5 from 128 '
    "tokens\": a one-step schedule); samples: the key's own; "
    "pooled: the population tested when the key has too few; guarantee: `segment` "
    "(certified on its own samples), `pooled` (for the pool only) or `none` (safe default); "
    "tokens saved and EM-drop bound: expected on the tested samples (production → proposed); "
    "step-limited: held back by the step limit from the test's choice; exploration: "
    "the key's own share of requests run to the end, or the policy's ({share:g})."
)


def _pipe_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    # Cells padded to their column's width: the Markdown reads as a table in plain text too.
    cells = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return [line(cells[0]), line(["-" * max(w, 3) for w in widths])] + [line(r) for r in cells[1:]]


def _table(keys: Sequence[KeyFacts]) -> list[str]:
    rows = [_row(key, m, i == 0) for key in keys for i, m in enumerate(key.modes)]
    return _pipe_table(_COLUMNS, rows)


def _summary_table(facts: ReviewFacts) -> list[str]:
    rows = []
    for s in mode_summaries(facts):
        top = largest_bound(facts, s.mode)
        where = "-" if top is None else f"{top.value:.4f} (`{top.key}`)"
        rows.append([s.mode, _pct(s.production_saving), _pct(s.saving), where])
    header = ["load mode", "production saves", "proposal saves", "largest EM-drop bound"]
    return _pipe_table(header, rows)


def page_markdown(
    facts: ReviewFacts, review: ReviewDecision, *, policy_name: str, plot: str | None
) -> str:
    """The review page as Markdown; ``plot`` is the image's URL (None: no image line)."""
    moved = [k for k in facts.keys if changed(k)]
    stay = [k for k in facts.keys if not changed(k)]
    out = [f"# Policy proposal: {_md(policy_name)}", "", f"> {_md(verdict(facts, review))}"]
    out += ["", "## Review", ""]
    state = "auto-approved" if review.auto_approve else "needs a reviewer"
    out.append(f"This proposal {state}:")
    out += [""] + [f"- {_md(r)}" for r in reasons(review) or ["no reason given"]]
    if facts.flags or facts.dropped:
        out += ["", "## Flags", ""]
        out += [f"- {_md(flag)}" for flag in facts.flags]
        out += [
            f"- dropped key `{key}`: production has it, this proposal does not"
            for key in facts.dropped
        ]
    out += ["", "## Expected tokens saved", ""]
    out += _summary_table(facts)
    out += [
        "",
        "Averages over the keys, weighted by the exploration samples each key serves; "
        "a key's saving and bound are measured on its tested population's samples.",
    ]
    out += ["", f"## Keys that change ({len(moved)})", ""]
    out += _table(moved) if moved else ["No threshold moves."]
    if stay:
        out += ["", f"## Keys that stay ({len(stay)})", ""]
        out += _table(stay)
    out += ["", _LEGEND.format(share=facts.exploration_share)]
    out += ["", "## Pareto plot", ""]
    if plot is not None:
        out += [f"![Pareto plot: tokens saved against EM drop]({plot})", ""]
    out.append(
        f"Run artifact `{names.PLOT_ARTIFACT}`: tokens saved against EM drop per tested "
        f"population; a star marks the {facts.plot_mode}-load threshold chosen."
    )
    if facts.certification:
        out += ["", "## Certification", "", _md(facts.certification)]
    return "\n".join(out) + "\n"


def page_html(
    facts: ReviewFacts, review: ReviewDecision, *, policy_name: str, plot_png: bytes | None
) -> str:
    """The page as one self-contained HTML file: inline CSS, the plot as a data URI."""
    from markdown_it import MarkdownIt

    plot = None
    if plot_png is not None:
        plot = "data:image/png;base64," + base64.b64encode(plot_png).decode("ascii")
    text = page_markdown(facts, review, policy_name=policy_name, plot=plot)
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    title = html.escape(f"Policy proposal: {policy_name}")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
