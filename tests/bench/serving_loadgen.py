#!/usr/bin/env python3
"""Load generator for tests/bench/serving_vs_llamacpp.sh (Python 3 stdlib only).

Runs N concurrent streams against an OpenAI-compatible /v1/completions
endpoint (tokenmilld or llama-server). Each stream is one thread that sends
its requests back to back, each on a new HTTP/1.1 connection, stream=true,
temperature 0, ignore_eos, a fixed max_tokens. Prompts are token-id arrays,
so both engines see exactly the same prompt tokens without depending on
either one's tokenizer: request r of stream s gets prompt length
LENGTHS[(s + r) % len(LENGTHS)] and token ids drawn from a PRNG seeded with
(seed, s, r), the same for every engine. Every prompt is distinct, so
neither engine's prefix cache turns a prefill into a cache hit.

Per request: TTFT (request sent -> first SSE event carrying generated text),
inter-token gaps (between consecutive events carrying text), generated
tokens (usage.completion_tokens of the final usage event when the server
sends one, else the number of text events). Aggregate tokens/s is the sum of
generated tokens over the wall time from the first request sent to the last
response finished. One unmeasured warm-up request runs first.

Prints one JSON object on stdout; errors (HTTP status, connection failures,
short generations) are counted in it and make the exit status 1.
"""
import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import urllib.parse


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def gguf_vocab_size(path):
    """Length of tokenizer.ggml.tokens in a GGUF file (versions 2 and 3)."""
    import struct
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    with open(path, "rb") as f:
        magic, version, _, n_kv = struct.unpack("<4sIQQ", f.read(24))
        if magic != b"GGUF" or version < 2:
            raise ValueError("%s: not a GGUF v2/v3 file" % path)
        u64 = lambda: struct.unpack("<Q", f.read(8))[0]
        u32 = lambda: struct.unpack("<I", f.read(4))[0]
        def skip(t):
            if t == 8:
                f.seek(u64(), 1)
            elif t == 9:
                et, n = u32(), u64()
                if et in sizes:
                    f.seek(sizes[et] * n, 1)
                else:
                    for _ in range(n):
                        skip(et)
            else:
                f.seek(sizes[t], 1)
        for _ in range(n_kv):
            key = f.read(u64()).decode()
            t = u32()
            if key == "tokenizer.ggml.tokens" and t == 9:
                u32()
                return u64()
            skip(t)
    raise ValueError("%s: no tokenizer.ggml.tokens" % path)


def make_prompt(seed, stream, request, lengths, vocab_lo, vocab_hi):
    rng = random.Random("%d/%d/%d" % (seed, stream, request))
    n = lengths[(stream + request) % len(lengths)]
    return [rng.randrange(vocab_lo, vocab_hi) for _ in range(n)]


class Result:
    def __init__(self):
        self.ttft = None
        self.gaps = []
        self.tokens = 0
        self.text_events = 0
        self.usage_tokens = None
        self.error = None


def one_request(conn, path, headers, body):
    """Sends one streaming completion on conn; returns a Result."""
    res = Result()
    sent = time.perf_counter()
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        res.error = "HTTP %d: %s" % (resp.status, resp.read()[:300].decode("utf-8", "replace"))
        return res
    last = None
    done = False
    while True:
        line = resp.readline()
        if not line:
            break
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            continue  # read to the end of the body
        event = json.loads(data)
        now = time.perf_counter()
        if "error" in event:
            res.error = "stream error: %s" % json.dumps(event["error"])[:300]
        usage = event.get("usage")
        if usage and usage.get("completion_tokens") is not None:
            res.usage_tokens = usage["completion_tokens"]
        for choice in event.get("choices") or []:
            if choice.get("text"):
                if last is None:
                    res.ttft = now - sent
                else:
                    res.gaps.append(now - last)
                last = now
                res.text_events += 1
                break
    if not done and res.error is None:
        res.error = "stream ended without [DONE]"
    res.tokens = res.usage_tokens if res.usage_tokens is not None else res.text_events
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--model", required=True)
    ap.add_argument("--engine", default="", help="label copied into the output")
    ap.add_argument("--streams", type=int, required=True)
    ap.add_argument("--requests-per-stream", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-lengths", default="32,64,128,256")
    ap.add_argument("--vocab", type=int, default=0, help="vocabulary size (default: read from --gguf)")
    ap.add_argument("--gguf", default="", help="the served GGUF file, for its vocabulary size")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0, help="per-request socket timeout, s")
    a = ap.parse_args()

    url = urllib.parse.urlsplit(a.url)
    lengths = [int(x) for x in a.prompt_lengths.split(",")]
    if a.vocab <= 0:
        if not a.gguf:
            ap.error("give --vocab or --gguf")
        a.vocab = gguf_vocab_size(a.gguf)
    # Skip the lowest ids (byte and special tokens in most vocabularies).
    vocab_lo, vocab_hi = min(256, a.vocab // 2), a.vocab
    headers = {"Content-Type": "application/json"}
    if a.api_key:
        headers["Authorization"] = "Bearer " + a.api_key

    def body(prompt):
        return json.dumps({
            "model": a.model,
            "prompt": prompt,
            "max_tokens": a.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        })

    def connect():
        return http.client.HTTPConnection(url.hostname, url.port, timeout=a.timeout)

    # Warm-up: pages in the weights and any lazily built state; not measured.
    conn = connect()
    try:
        warm = one_request(conn, "/v1/completions", headers,
                           body(make_prompt(a.seed, -1, 0, lengths, vocab_lo, vocab_hi)))
    except (OSError, http.client.HTTPException, ValueError) as e:
        warm = Result()
        warm.error = "%s: %s" % (type(e).__name__, e)
    conn.close()
    if warm.error:
        print(json.dumps({"engine": a.engine, "streams": a.streams, "fatal": "warm-up: " + warm.error}))
        return 1

    results = [[] for _ in range(a.streams)]
    errors = []
    start_barrier = threading.Barrier(a.streams + 1)

    def stream(s):
        start_barrier.wait()
        for r in range(a.requests_per_stream):
            prompt = make_prompt(a.seed, s, r, lengths, vocab_lo, vocab_hi)
            # A fresh connection per request: llama-server closes the
            # connection after a streamed response (while announcing
            # keep-alive), so both engines pay the same loopback connect.
            conn = connect()
            try:
                res = one_request(conn, "/v1/completions", headers, body(prompt))
            except (OSError, http.client.HTTPException, ValueError) as e:
                res = Result()
                res.error = "%s: %s" % (type(e).__name__, e)
            conn.close()
            if res.error is None and res.tokens != a.max_tokens:
                res.error = "generated %d tokens, asked for %d" % (res.tokens, a.max_tokens)
            res.prompt_tokens = len(prompt)
            results[s].append(res)
            if res.error:
                errors.append(res.error)

    threads = [threading.Thread(target=stream, args=(s,), daemon=True) for s in range(a.streams)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    start_barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0

    done = [r for rs in results for r in rs if r.error is None]
    ttft = [r.ttft for r in done if r.ttft is not None]
    gaps = [g for r in done for g in r.gaps]
    tokens = sum(r.tokens for r in done)
    events = sum(r.text_events for r in done)
    ms = lambda v: None if v is None else round(v * 1000.0, 2)
    out = {
        "engine": a.engine,
        "streams": a.streams,
        "requests": a.streams * a.requests_per_stream,
        "completed": len(done),
        "errors": len(errors),
        "first_errors": errors[:3],
        "max_tokens": a.max_tokens,
        "prompt_lengths": lengths,
        "prompt_tokens": sum(r.prompt_tokens for r in done),
        "generated_tokens": tokens,
        "text_events": events,
        "usage_reported": all(r.usage_tokens is not None for r in done) if done else False,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 3) if wall > 0 else None,
        "ttft_ms_p50": ms(percentile(ttft, 50)),
        "ttft_ms_p95": ms(percentile(ttft, 95)),
        "itl_ms_p50": ms(percentile(gaps, 50)),
        "itl_ms_p95": ms(percentile(gaps, 95)),
        "itl_ms_mean": ms(statistics.fmean(gaps)) if gaps else None,
        "loadgen_cpu_s": round(cpu, 3),
        "loadgen_cpu_share": round(cpu / wall, 4) if wall > 0 else None,
    }
    print(json.dumps(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
