"""Variants of the Azure LLM 2023 traces that no policy was tuned on, for llm_sim.py's `--trace FILE`.

    .venv/bin/python bench/llm_trace_variants.py /tmp/llm-variants
    PYTHONPATH=operator .venv/bin/python bench/llm_sim.py --trace /tmp/llm-variants/code_reversed.csv ...

- code_reversed: code's requests with time running backwards (its biggest burst, minute 14, comes
  at minute 42, after lighter ones; the bursts' order and spacing change);
- code_minutes_shuffled: code's minutes in a seeded random order (each minute's second-scale
  bursts kept, their order and spacing not);
- code_arrivals_conv_tokens: code's arrivals with prompt and generated tokens drawn (seeded) from
  conv's requests: code's bursts of conv's longer answers;
- conv_reversed: conv's requests with time running backwards.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from traces import azure_2023_requests

Rows = list[tuple[float, int, int]]


def reversed_in_time(rows: Rows) -> Rows:
    end = max(at for at, _, _ in rows)
    return [(end - at, prompt, generated) for at, prompt, generated in rows]


def minutes_shuffled(rows: Rows, seed: int = 2) -> Rows:
    minutes = list(range(int(max(at for at, _, _ in rows) // 60) + 1))
    random.Random(seed).shuffle(minutes)
    position = {minute: i for i, minute in enumerate(minutes)}
    return [(position[int(at // 60)] * 60 + at % 60, prompt, generated) for at, prompt, generated in rows]


def tokens_of(rows: Rows, sizes_from: Rows, seed: int = 1) -> Rows:
    rng = random.Random(seed)
    sizes = [(prompt, generated) for _, prompt, generated in sizes_from]
    return [(at, *rng.choice(sizes)) for at, _, _ in rows]


def variants() -> dict[str, Rows]:
    code, conv = azure_2023_requests("code"), azure_2023_requests("conv")
    return {
        "code_reversed": reversed_in_time(code),
        "code_minutes_shuffled": minutes_shuffled(code),
        "code_arrivals_conv_tokens": tokens_of(code, conv),
        "conv_reversed": reversed_in_time(conv),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, rows in variants().items():
        path = args.directory / f"{name}.csv"
        lines = [f"{at:.3f},{prompt},{generated}" for at, prompt, generated in sorted(rows)]
        path.write_text("offset_s,context_tokens,generated_tokens\n" + "\n".join(lines) + "\n")
        print(path, len(rows), "requests")


if __name__ == "__main__":
    main()
