"""Speed of the embedded CPU backends on this machine.

ONNX MiniLM: milliseconds per sentence, one sentence per call (an interactive job's latency) and
in batches of 64 (a batch job's throughput). llama.cpp SmolLM2: time to first token and tokens
per second while decoding, at temperature 0. Prints a line per figure and, last, one JSON line.

    python bench/backends.py [--threads 1] [--repeats 3] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node_agent.backends.base import GenerateParams
from node_agent.backends.onnx_embedding import OnnxEmbeddingBackend

# Short to medium sentences of the kind an SMB embeds (support tickets, product text, search).
SENTENCES = [
    "How do I reset my password?",
    "The invoice for October was charged twice to our corporate card.",
    "Our West Texas site curtailed for three hours when prices spiked.",
    "Stainless steel water bottle, 750 ml, keeps drinks cold for 24 hours.",
    "Can I move my reservation from Friday evening to Saturday morning?",
    "Quarterly revenue grew by twelve percent, driven by subscription renewals.",
    "The delivery arrived damaged and the box was open on one side.",
    "Find vegetarian restaurants near the central station that are open late.",
    "Please summarise the attached contract and list every termination clause it contains.",
    "Error 503 appears after the upgrade whenever more than fifty users log in at once.",
    "A gentle introduction to linear programming for operations planners.",
    "Hashprice fell after the halving while the network difficulty kept rising.",
]
PROMPTS = [
    "Explain in a few sentences why electricity prices change during the day.",
    "Write a short product description for a solar-powered lamp.",
    "Give three tips for writing clear emails.",
]


def bench_onnx(threads: int, repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    backend = OnnxEmbeddingBackend(intra_op_threads=threads)
    load_s = time.perf_counter() - t0
    backend.embed(SENTENCES[:2])  # warm-up: first run allocates
    single_ms: list[float] = []
    for _ in range(repeats):
        for s in SENTENCES:
            t = time.perf_counter()
            backend.embed([s])
            single_ms.append((time.perf_counter() - t) * 1000)
    batch = (SENTENCES * 6)[:64]
    batch_ms_per_sentence: list[float] = []
    tokens = 0
    for _ in range(repeats):
        t = time.perf_counter()
        out = backend.embed(batch)
        batch_ms_per_sentence.append((time.perf_counter() - t) * 1000 / len(batch))
        tokens = out.prompt_tokens
    return {
        "load_s": round(load_s, 3),
        "single_ms_per_sentence_median": round(statistics.median(single_ms), 3),
        "single_ms_per_sentence_p90": round(statistics.quantiles(single_ms, n=10)[-1], 3),
        "batch64_ms_per_sentence_median": round(statistics.median(batch_ms_per_sentence), 3),
        "batch64_tokens_per_sentence": round(tokens / len(batch), 1),
    }


def bench_llama(threads: int, repeats: int, max_tokens: int) -> dict[str, Any] | str:
    try:
        from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend

        t0 = time.perf_counter()
        backend = LlamaCppGenerationBackend(n_threads=threads)
        load_s = time.perf_counter() - t0
    except Exception as exc:  # the llm extra is optional: report why, keep the ONNX figures
        return f"skipped: {exc}"
    backend.generate(GenerateParams("Hi.", 4), lambda s: None, lambda: False)  # warm-up
    ttft_ms: list[float] = []
    decode_tps: list[float] = []
    e2e_tps: list[float] = []
    completion = 0
    for _ in range(repeats):
        for prompt in PROMPTS:
            first: list[float] = []
            start = time.perf_counter()

            def on_token(piece: str, first: list[float] = first) -> None:
                if not first:
                    first.append(time.perf_counter())

            out = backend.generate(GenerateParams(prompt, max_tokens), on_token, lambda: False)
            end = time.perf_counter()
            completion += out.completion_tokens
            if not first or out.completion_tokens < 2:
                continue
            ttft_ms.append((first[0] - start) * 1000)
            # Tokens after the first, over the time after the first: the decode rate.
            decode_tps.append((out.completion_tokens - 1) / (end - first[0]))
            e2e_tps.append(out.completion_tokens / (end - start))
    return {
        "load_s": round(load_s, 3),
        "ttft_ms_median": round(statistics.median(ttft_ms), 1),
        "decode_tokens_per_s_median": round(statistics.median(decode_tps), 1),
        "end_to_end_tokens_per_s_median": round(statistics.median(e2e_tps), 1),
        "completion_tokens_total": completion,
        "max_tokens": max_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    onnx = bench_onnx(args.threads, args.repeats)
    print(f"onnx all-minilm-l6-v2, {args.threads} thread(s):")
    for key, value in onnx.items():
        print(f"  {key}: {value}")
    llama = bench_llama(args.threads, args.repeats, args.max_tokens)
    print(f"llama.cpp smollm2-135m-instruct, {args.threads} thread(s):")
    if isinstance(llama, str):
        print(f"  {llama}")
    else:
        for key, value in llama.items():
            print(f"  {key}: {value}")
    print(
        json.dumps(
            {
                "bench": "backends",
                "machine": platform.machine(),
                "python": platform.python_version(),
                "threads": args.threads,
                "onnx_minilm": onnx,
                "llama_smollm2": llama,
            }
        )
    )


if __name__ == "__main__":
    main()
