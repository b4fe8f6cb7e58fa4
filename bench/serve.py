"""Serving throughput: `cerebras-gpt serve` (continuous batching) vs one-at-a-time transformers `generate()`.

The 111M shape with random weights, fp32 on the CPU. The same set of requests (random 32-token
prompts, 48 greedy tokens each, EOS ignored so every request generates the same amount) is sent by
1, 4 and 16 concurrent streaming clients to a real server process (each client sends its next
request when the previous one ends), and answered one after another by transformers'
`GPT2LMHeadModel.generate()` in this process: what a server without batching does. For the
sequential peer, time to first token includes the wait behind the requests queued before it
(the same arrival pattern: c clients, each with one request outstanding).

Reported: aggregate generated tokens/s, p50/p99 time to first token (client side, from sending the
request to the first streamed token), failed requests. Goal: at 16 clients at least 6x the
single-client aggregate throughput, with zero failures.

    flock /tmp/bench.lock python bench/serve.py [--concurrency 1 4 16] [--requests 16] [--no-record]
        [--device cuda --dtype bfloat16] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of a non-empty list."""
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), to see past CPU stolen by other jobs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_clients(url: str, prompts: list[list[int]], max_tokens: int, concurrency: int) -> dict:
    """``concurrency`` streaming clients share the request list; returns wall time, tokens, TTFTs, failures."""
    import httpx

    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    ttft: list[float] = []
    tokens, failures = 0, 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens, failures
        while not queue.empty():
            prompt = queue.get_nowait()
            body = {
                "model": "bench",
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
                "ignore_eos": True,
            }
            sent, first, usage = time.perf_counter(), None, None
            try:
                async with http.stream("POST", url + "/v1/completions", json=body) as r:
                    if r.status_code != 200:
                        failures += 1
                        continue
                    async for line in r.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        msg = json.loads(line[6:])
                        if first is None and msg["choices"] and msg["choices"][0]["text"]:
                            first = time.perf_counter()
                        usage = msg.get("usage") or usage
            except httpx.HTTPError:
                failures += 1
                continue
            if first is None or usage is None or usage["completion_tokens"] != max_tokens:
                failures += 1
                continue
            ttft.append(first - sent)
            tokens += usage["completion_tokens"]

    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=None, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"wall": wall, "tokens": tokens, "ttft": ttft, "failures": failures}


def run_transformers(
    model_dir: str,
    prompts: list[list[int]],
    max_tokens: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[tuple[float, float]]:
    """(time to first token, total time) of each request, answered one after another by generate()."""
    from transformers import GPT2LMHeadModel
    from transformers.generation.streamers import BaseStreamer

    class FirstToken(BaseStreamer):
        def __init__(self) -> None:
            self.calls, self.at = 0, None

        def put(self, value) -> None:
            self.calls += 1
            if self.calls == 2:  # the first call carries the prompt, the second the first new token
                self.at = time.perf_counter()

        def end(self) -> None:
            pass

    model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    out = []
    with torch.inference_mode():
        ids = torch.tensor([prompts[0]], device=device)
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, pad_token_id=50256)
        for p in prompts:
            ids, streamer = torch.tensor([p], device=device), FirstToken()
            start = time.perf_counter()
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=50256,
                streamer=streamer,
            )
            end = time.perf_counter()
            assert gen.shape[1] - ids.shape[1] == max_tokens
            out.append((streamer.at - start, end - start))
    return out


def sequential_ttfts(service: list[tuple[float, float]], concurrency: int) -> list[float]:
    """TTFTs of a one-at-a-time server (FIFO) fed by ``concurrency`` clients that each send their next
    request when their previous one completes: request k arrives when request k - concurrency ends."""
    done: list[float] = []
    ttft = []
    clock = 0.0
    for k, (first, total) in enumerate(service):
        arrival = 0.0 if k < concurrency else done[k - concurrency]
        start = max(clock, arrival)
        ttft.append(start - arrival + first)
        clock = start + total
        done.append(clock)
    return ttft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="Cerebras-GPT-111M")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all levels (medians are reported)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: where the server and the peer run")
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument(
        "--quantize",
        default="none",
        choices=["none", "bf16", "int8"],
        help="the server's weight precision (the peer stays at --dtype); recorded in its own section",
    )
    args = parser.parse_args()

    import httpx

    from cerebras_gpt import GPT, GPTConfig
    from cerebras_gpt.runtime import resolve_device_dtype

    device, dtype = resolve_device_dtype(args.device, args.dtype)

    torch.manual_seed(0)
    tmp = tempfile.TemporaryDirectory()
    model_dir = tmp.name
    GPT(GPTConfig.from_name(args.preset)).save_pretrained(model_dir)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, 50256, (args.requests, args.prompt_tokens), generator=gen).tolist()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    slots = max(args.concurrency)
    cmd = [
        sys.executable,
        "-m",
        "cerebras_gpt",
        "serve",
        "--model",
        model_dir,
        "--model-name",
        "bench",
        "--port",
        str(port),
        "--max-slots",
        str(slots),
        "--max-seq-len",
        str(args.prompt_tokens + args.max_tokens),
        "--log-level",
        "warning",
        "--device",
        str(device),
        "--dtype",
        str(dtype).removeprefix("torch."),
        "--quantize",
        args.quantize,
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.5)
        asyncio.run(run_clients(url, prompts[:4], 4, 4))  # warm-up
        runs: dict[int, list[dict]] = {c: [] for c in args.concurrency}
        for round_ in range(args.rounds):  # levels interleaved, so load changes hit every level alike
            for c in args.concurrency:
                cpu = cpu_seconds(server.pid)
                r = asyncio.run(run_clients(url, prompts, args.max_tokens, c))
                r["cpu"] = cpu_seconds(server.pid) - cpu
                runs[c].append(r)
                print(
                    f"round {round_ + 1}: cerebras-gpt serve, {c:2d} clients: {r['tokens'] / r['wall']:.1f} tok/s, "
                    f"TTFT p50 {percentile(r['ttft'], 50):.2f} s p99 {percentile(r['ttft'], 99):.2f} s, "
                    f"{r['failures']} failed, {r['tokens'] / r['cpu']:.1f} tok per server CPU-s",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(timeout=60)

    service = run_transformers(model_dir, prompts, args.max_tokens, device, dtype)
    hf_rate = args.requests * args.max_tokens / sum(total for _, total in service)
    print(f"transformers generate() one at a time: {hf_rate:.1f} tok/s", flush=True)

    rate = {c: statistics.median(r["tokens"] / r["wall"] for r in runs[c]) for c in args.concurrency}
    ttft = {c: [t for r in runs[c] for t in r["ttft"]] for c in args.concurrency}
    failed = {c: sum(r["failures"] for r in runs[c]) for c in args.concurrency}
    per_cpu = {c: statistics.median(r["tokens"] / r["cpu"] for r in runs[c]) for c in args.concurrency}
    cpu_scale = per_cpu[max(args.concurrency)] / per_cpu[min(args.concurrency)]
    base_rate = rate[min(args.concurrency)]
    rows = []
    for c in args.concurrency:
        seq = sequential_ttfts(service, c)
        rows.append(
            f"| {c} | {rate[c]:.1f} | {percentile(ttft[c], 50):.2f} | {percentile(ttft[c], 99):.2f} | "
            f"{failed[c]} | {rate[c] / base_rate:.2f}x | {hf_rate:.1f} | {percentile(seq, 50):.2f} | "
            f"{percentile(seq, 99):.2f} | {rate[c] / hf_rate:.2f}x |"
        )
    scale = rate[max(args.concurrency)] / base_rate
    failures = sum(failed.values())
    verdict = "met" if scale >= 6 and failures == 0 else "not met"
    table = "\n".join(rows)
    per_round = "; ".join(
        " / ".join(f"{runs[c][i]['tokens'] / runs[c][i]['wall']:.1f}" for c in args.concurrency)
        for i in range(args.rounds)
    )
    where = "CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)
    precision = "" if args.quantize == "none" else f", weights {args.quantize} (`--quantize {args.quantize}`)"
    title = "" if args.quantize == "none" else f", {args.quantize} weights"
    flags = "" if args.quantize == "none" else f" --quantize {args.quantize}"
    body = f"""## Serving: continuous batching vs one request at a time{title}

`flock /tmp/bench.lock python bench/serve.py{flags}` — {args.preset} shape, random weights, {str(dtype)[6:]}{precision}, {where}
({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, shared machine).
{args.requests} requests per level: {args.prompt_tokens}-token prompts, {args.max_tokens} greedy tokens each (EOS
ignored). `cerebras-gpt serve` runs as its own process (`--max-slots {slots}`); c streaming clients each
send their next request when the previous ends. {args.rounds} rounds over the levels, interleaved:
tokens/s is the median round, TTFT percentiles pool all rounds' requests. The peer answers the same
requests one after another with transformers `generate()` (what a server without batching does); its time to first token includes
waiting behind the requests queued before it, for the same c clients.

| clients | serve tok/s | TTFT p50 (s) | TTFT p99 (s) | failed | vs 1 client | generate() tok/s \
| generate() TTFT p50 (s) | generate() TTFT p99 (s) | serve / generate() |
|---|---|---|---|---|---|---|---|---|---|
{table}

Goal: at {max(args.concurrency)} clients at least 6x the single-client aggregate throughput with zero failed requests:
**{scale:.2f}x, {failures} failed ({verdict})**. Aggregate tokens/s = all generated tokens / wall time of the level.
Per round (tok/s at {", ".join(map(str, args.concurrency))} clients): {per_round}.
Tokens per CPU-second of the server process (median; not inflated by CPU other jobs take on a shared
machine): {" / ".join(f"{per_cpu[c]:.1f}" for c in args.concurrency)}, i.e. {cpu_scale:.2f}x more tokens per
CPU-second at {max(args.concurrency)} clients than at {min(args.concurrency)}.
"""
    print(body)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "preset": args.preset,
                    "device": str(device),
                    "dtype": str(dtype).removeprefix("torch."),
                    "quantize": args.quantize,
                    "requests": args.requests,
                    "max_tokens": args.max_tokens,
                    "levels": {
                        str(c): {
                            "tokens_per_s": rate[c],
                            "ttft_p50_s": percentile(ttft[c], 50) if ttft[c] else None,
                            "ttft_p99_s": percentile(ttft[c], 99) if ttft[c] else None,
                            "failed": failed[c],
                        }
                        for c in args.concurrency
                    },
                    "transformers_sequential_tokens_per_s": hf_rate,
                },
                indent=2,
            )
            + "\n"
        )
    if not args.no_record:
        from update_section import update_section

        update_section(ROOT / "BENCHMARKS.md", "serve" if args.quantize == "none" else f"serve-{args.quantize}", body)
    tmp.cleanup()


if __name__ == "__main__":
    main()
