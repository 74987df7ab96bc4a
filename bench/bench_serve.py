"""The real node's generation cost: tokens/s with and without confidence probes.

    .venv/bin/python bench/bench_serve.py                  # 3 rounds x 128 tokens
    .venv/bin/python bench/bench_serve.py --rounds 5 --json out.json

One slot of ``pipeline serve`` (:class:`pipeline.serve.engine.LlamaEngine`, the
packaged SmolLM2-135M-Instruct GGUF, one thread) generates the same greedy
``--tokens`` tokens for a question of ``data/questions/basic.jsonl`` under two
plans, alternated round by round so both see the same machine: the safe
default (threshold off: no probe at all) and exploration (a trial-answer
probe every ``--check-every`` tokens, run to the budget). The probe overhead
per checkpoint is measured from the difference, in milliseconds and in
tokens (what the event reports as ``tokens_probe``). Needs the ``llm`` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from _common import Report, add_json_argument

from pipeline.node import Controller
from pipeline.node.decision import RequestPlan, Rule
from pipeline.serve.engine import LlamaEngine, Sampling
from pipeline.serve.model import default_model_path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "data/questions/basic.jsonl"


def plan(rule: Rule, *, exploration: bool) -> RequestPlan:
    """A plan with ``rule`` (no controller needed: the bench fixes it)."""
    return RequestPlan(
        request_id="bench",
        policy_name="default",
        policy_version=0,
        arm="production",
        exploration=exploration,
        load_mode="normal",
        segment_key="global",
        rule=rule,
    )


def run(rounds: int, tokens: int, check_every: int) -> dict[str, Any]:
    """Measure both plans ``rounds`` times, alternated; return the report as JSON values."""
    engine = LlamaEngine(default_model_path(), n_ctx=1024, check_every=check_every, n_threads=1)
    question = json.loads(QUESTIONS.read_text().splitlines()[0])["question"]
    prompt = engine.tokenize(engine.chat_prompt([{"role": "user", "content": question}]))
    sampling = Sampling(max_tokens=tokens)
    off = plan(Rule(threshold=1.0, min_tokens=0, token_budget=tokens), exploration=False)
    probing = plan(
        Rule(threshold=1.0, min_tokens=0, token_budget=tokens, explore=True), exploration=True
    )
    controller = Controller()
    seconds: dict[str, list[float]] = {"off": [], "probes": []}
    generated: dict[str, list[int]] = {"off": [], "probes": []}
    probe_tokens: list[int] = []
    checkpoints: list[int] = []
    for _ in range(rounds):
        for name, chosen in (("off", off), ("probes", probing)):
            started = time.perf_counter()
            result = engine.generate(prompt, chosen, controller, sampling)
            seconds[name].append(time.perf_counter() - started)
            generated[name].append(result.tokens_generated)
            if name == "probes":
                probe_tokens.append(result.tokens_probe)
                checkpoints.append(len(result.trajectory))
    return _report(rounds, tokens, check_every, seconds, generated, probe_tokens, checkpoints)


def _report(
    rounds: int,
    tokens: int,
    check_every: int,
    seconds: dict[str, list[float]],
    generated: dict[str, list[int]],
    probe_tokens: list[int],
    checkpoints: list[int],
) -> dict[str, Any]:
    rep = Report(
        "Real node: generation with and without confidence probes",
        f".venv/bin/python bench/bench_serve.py --rounds {rounds} --tokens {tokens}",
    )
    rate = {name: sum(generated[name]) / sum(seconds[name]) for name in ("off", "probes")}
    rep.add("tokens/s, no probes (safe default)", rate["off"], "tokens/s")
    rep.add(
        f"tokens/s, a probe every {check_every} tokens",
        rate["probes"],
        "tokens/s",
        detail=f"{rate['probes'] / rate['off']:.2f}x the rate without probes",
    )
    points = max(statistics.mean(checkpoints), 1.0)
    extra_s = statistics.mean(seconds["probes"]) - statistics.mean(seconds["off"])
    rep.add("probe overhead per checkpoint", 1000 * extra_s / points, "ms")
    rep.add(
        "probe tokens per checkpoint",
        statistics.mean(probe_tokens) / points,
        "tokens",
        detail="inducer plus greedy trial-answer tokens; netted out of every saving",
    )
    rep.notes.append(
        f"One slot, one thread, SmolLM2-135M-Instruct Q4_1; {rounds} rounds of {tokens} greedy "
        "tokens per plan, alternated. The final answer extraction at the end of a request "
        "(one probe) is paid by both plans and not counted as probe cost."
    )
    return rep.to_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--check-every", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1 round of 64 tokens")
    add_json_argument(parser)
    args = parser.parse_args()
    rounds, tokens = (1, 64) if args.quick else (args.rounds, args.tokens)
    result = run(rounds, tokens, args.check_every)
    for figure in result["figures"]:
        print(f"{figure['name']:<45} {figure['value']:10.2f} {figure['unit']}  {figure['detail']}")
    print("\n" + "\n".join(result["notes"]))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
