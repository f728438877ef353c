"""The embedded LLMs as voice agents: held-out everyday questions asked through the LLM worker's handler with
the voice chain's system prompt and reply cap; per answer, whether it is complete sentences, its length, whether
it ran into the cap, time to first token and total time.

``python -m benchmarks.assistant [--quick] [--runs N] [--models smollm2,gemma,...]``. Each model is
baked (``python -m workers.common.bake --worker llm --embedded NAME``) into the cache folder first if missing.
Greedy answers (the same every run; the timings are medians of the runs) and one sampled answer per question at
the voice agent's temperature (0.7, seed 0).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from voicepod.agent import BASE_MODEL_PRIMER, DEFAULT_SYSTEM_PROMPT

from benchmarks import RESULTS, md_table, median, write_results

# Held out: none of these is asked by a test or used while choosing the prompt's wording.
QUESTIONS = [
    "How far away is the moon?",
    "What should I cook tonight?",
    "Can you recommend a good book?",
    "How do I reset my router?",
    "What's a good way to fall asleep faster?",
    "Why is the sky blue?",
    "How many days are there in a leap year?",
    "What can I do on a rainy afternoon?",
    "How do I boil an egg?",
    "Who wrote Romeo and Juliet?",
    "What is a healthy breakfast?",
    "How can I save money on groceries?",
]
MAX_TOKENS = 60  # the voice reply cap (VoiceAgent's default max_tokens)
SAMPLED = {"temperature": 0.7, "seed": 0}  # VoiceAgent's default temperature


# The voice system prompt before this benchmark chose DEFAULT_SYSTEM_PROMPT, kept to show what the change did.
EARLIER_SYSTEM_PROMPT = "Answer in one or two short sentences."


@dataclass(frozen=True)
class Setup:
    """A model and how it is asked: ``embedded`` names the baked model, ``primer`` prepends BASE_MODEL_PRIMER."""

    name: str
    embedded: str
    primer: bool = False
    system_prompt: str = DEFAULT_SYSTEM_PROMPT


SETUPS = {
    "smollm2": Setup("SmolLM2-135M-Instruct (chat template)", "smollm2"),
    "smollm2-earlier-prompt": Setup("SmolLM2-135M-Instruct, earlier system prompt", "smollm2",
                                    system_prompt=EARLIER_SYSTEM_PROMPT),
    "gemma": Setup("Gemma 3 270M base (User:/Assistant:, no primer)", "gemma"),
    "gemma-primer": Setup("Gemma 3 270M base with BASE_MODEL_PRIMER", "gemma", primer=True),
}

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def complete_sentences(text: str) -> bool:
    """Whether ``text`` ends a sentence: its last character (closing quotes aside) is ``.``, ``!`` or ``?``."""
    return bool(_SENTENCE_END.search(text.strip()))


@dataclass
class Answer:
    question: str
    text: str
    finish_reason: str
    tokens: int
    ttft_s: float
    total_s: float

    @property
    def words(self) -> int:
        return len(self.text.split())

    @property
    def complete(self) -> bool:
        return self.finish_reason == "stop" and complete_sentences(self.text)


def messages(question: str, primer: bool, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> list[dict[str, str]]:
    """What VoiceAgent sends the LLM for a first turn (with the primer as its history when asked)."""
    return [{"role": "system", "content": system_prompt}, *(BASE_MODEL_PRIMER if primer else []),
            {"role": "user", "content": question}]


async def ask(handler: Any, question: str, setup: Setup, options: dict[str, Any]) -> Answer:
    """Ask ``question`` through the worker's handler, timing the first delta and the done chunk."""
    started = time.perf_counter()
    first = None
    asked = messages(question, setup.primer, setup.system_prompt)
    job = {"id": "bench", "input": {"messages": asked, "max_tokens": MAX_TOKENS, **options}}
    async for chunk in handler(job):
        if chunk["type"] == "delta" and first is None:
            first = time.perf_counter() - started
        elif chunk["type"] == "done":
            total = time.perf_counter() - started
            return Answer(question, chunk["text"], chunk["finish_reason"], chunk["usage"]["completion_tokens"],
                          first if first is not None else total, total)
        elif chunk["type"] == "error":
            raise RuntimeError(chunk["error"])
    raise RuntimeError("no done chunk")


def _use(llm: Any, embedded: str) -> None:
    """Point the loaded handler module at the baked embedded model ``embedded``: the handler's own code path,
    another model (the module loads its model once, at import)."""
    from workers.llm.bake import default_model_dir, ensure_embedded
    from workers.llm.generation import load_language_model, parse_dtype

    folder = ensure_embedded(default_model_dir(embedded), embedded)
    llm.LM = load_language_model(str(folder), parse_dtype("bfloat16"), "cpu", folder.name)


def _summary(answers: list[Answer]) -> dict[str, Any]:
    return {
        "complete": sum(a.complete for a in answers),
        "runaway": sum(a.finish_reason == "length" for a in answers),
        "median_words": median([a.words for a in answers]),
        "median_ttft_s": median([a.ttft_s for a in answers]),
        "median_total_s": median([a.total_s for a in answers]),
    }


def run(quick: bool, runs: int, out: Path, setups: list[str]) -> dict[str, Any]:
    from workers.llm import handler as llm

    results: dict[str, Any] = {}
    for key in setups:
        setup = SETUPS[key]
        _use(llm, setup.embedded)
        asyncio.run(ask(llm.handler, "Hello.", setup, {"temperature": 0}))  # warm up, out of the numbers
        greedy: list[Answer] = []
        for question in QUESTIONS:
            timed = [asyncio.run(ask(llm.handler, question, setup, {"temperature": 0})) for _ in range(runs)]
            greedy.append(Answer(question, timed[0].text, timed[0].finish_reason, timed[0].tokens,
                                 median([a.ttft_s for a in timed]), median([a.total_s for a in timed])))
        sampled = [] if quick else [asyncio.run(ask(llm.handler, q, setup, SAMPLED)) for q in QUESTIONS]
        results[key] = {
            "name": setup.name,
            "system_prompt": setup.system_prompt,
            "greedy": [asdict(a) | {"words": a.words, "complete": a.complete} for a in greedy],
            "greedy_summary": _summary(greedy),
            "sampled": [asdict(a) | {"words": a.words, "complete": a.complete} for a in sampled],
            "sampled_summary": _summary(sampled) if sampled else None,
        }
    n = len(QUESTIONS)
    rows = []
    for r in results.values():
        for mode in ("greedy", "sampled"):
            s = r[f"{mode}_summary"]
            if s:
                rows.append([r["name"], mode, f"{s['complete']}/{n}", f"{s['runaway']}/{n}", s["median_words"],
                             s["median_ttft_s"], s["median_total_s"]])
    table = md_table(["model", "decoding", "complete sentences", "hit the cap", "median words",
                      "median first token s", "median total s"], rows)
    table += (f"\n\nSystem prompt {DEFAULT_SYSTEM_PROMPT!r} (the earlier one: {EARLIER_SYSTEM_PROMPT!r}), max_tokens "
              f"{MAX_TOKENS}, bf16 on CPU, through the LLM "
              f"worker's handler. Greedy timings: medians of {runs} runs per question; sampled: temperature "
              f"{SAMPLED['temperature']}, seed {SAMPLED['seed']}, one run.")
    for r in results.values():
        table += f"\n\n### {r['name']}\n\n"
        table += md_table(["question", "greedy answer", "complete", "words", "first token s", "total s"],
                          [[a["question"], a["text"].replace("\n", " ").replace("|", "/"), a["complete"],
                            a["words"], a["ttft_s"], a["total_s"]] for a in r["greedy"]])
        if r["sampled"]:
            table += "\n\nSampled (temperature 0.7):\n\n" + md_table(
                ["question", "answer", "complete", "words"],
                [[a["question"], a["text"].replace("\n", " ").replace("|", "/"), a["complete"], a["words"]]
                 for a in r["sampled"]])
    payload = {"questions": QUESTIONS, "system_prompt": DEFAULT_SYSTEM_PROMPT, "max_tokens": MAX_TOKENS,
               "runs": runs, "results": results}
    write_results("assistant", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per question, no sampled answers")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--models", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    args = parser.parse_args(argv)
    chosen = args.models.split(",")
    if unknown := set(chosen) - set(SETUPS):
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {list(SETUPS)}")
    run(args.quick, args.runs or (1 if args.quick else 3), args.out, chosen)


if __name__ == "__main__":
    main()
