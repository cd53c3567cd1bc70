#!/usr/bin/env bash
# tokenmilld next to llama-server serving the same GGUF file over HTTP, at
# several numbers of concurrent streams, same threads, same prompts, engines
# interleaved round by round, with ratios and their spread. Not run in CI.
#
#   bash tests/bench/serving_vs_llamacpp.sh [options]
#     --llama-build DIR   a llama.cpp build directory holding bin/llama-server
#                         (default: build/llama.cpp/build; configured again with
#                         the server when it lacks it; made as
#                         tests/bench/llama_cpp.sh says when DIR is new)
#     --tokenmilld PATH   the daemon (default: build/release/daemon/tokenmilld)
#     --tokenmill PATH    the CLI, to synthesize models (default:
#                         build/release/daemon/cli/tokenmill)
#     --model GGUF        serve this file instead of a synthesized one
#     --type T            weight type of the synthesized model (default q8_0)
#     --shape S           shape of the synthesized model: tiny|small|1b|8b
#                         (default 1b, the file vs_llamacpp.sh compares)
#     --threads N         compute threads of both engines (default 2; see below)
#     --streams LIST      concurrent streams, one run each (default "1 4 16 64")
#     --requests-per-stream N   requests each stream sends back to back (default 4)
#     --max-tokens N      tokens generated per request, EOS ignored (default 64)
#     --prompt-lengths L  prompt lengths in tokens, cycled over requests
#                         (default 32,64,128,256)
#     --rounds N          interleaved rounds (default 2)
#     --out DIR           keep logs, configs, raw JSON and the table here
#                         (default: a temp dir)
#
# Each (round, streams, engine) run starts its engine fresh on a free
# loopback port and stops it afterwards: llama-server's slot count (-np) and
# context (-c) are fixed at start and must follow the stream count, and
# restarting tokenmilld the same way gives both engines the same cold state
# (empty prefix cache, KV pool) and the same warm-up. Readiness is polled
# (llama-server: /health; tokenmilld: /readyz, which waits for its [[model]]
# to load, then /v1/models listing the model). Engine
# order alternates per round so drift in the machine's state falls on both.
#
# llama-server: -t/-tb N, -np STREAMS, -c STREAMS x (longest prompt +
#   max tokens + 16), --cont-batching, KV f16 (-ctk/-ctv f16), no web UI.
# tokenmilld: a config in DIR with the model on "cpu" (KV f16, the daemon's
#   default), context = longest prompt + max tokens + 16, max_seqs = streams,
#   one tenant with an API key, the OpenAI listener on the port, metrics off,
#   [[device]] match = "cpu" threads = N. With --threads below the online
#   core count both engines are also pinned with taskset to cores 0..N-1, so
#   neither uses more cores than the other.
#
# Load: tests/bench/serving_loadgen.py (docstring there): each stream sends
# /v1/completions requests back to back, each on a new loopback connection
# (llama-server closes one after a streamed response), stream=true,
# temperature 0, ignore_eos, distinct token-id prompts seeded identically for
# both engines, one unmeasured warm-up request first. Per run: aggregate generated tokens/s over the run's wall time,
# TTFT p50/p95 and inter-token latency p50/p95 over all requests, and the
# load generator's own CPU share (it runs on the same machine). The load
# average is recorded before every run: compare figures only from a quiet
# machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

llama_build=build/llama.cpp/build
tokenmilld=build/release/daemon/tokenmilld
tokenmill=build/release/daemon/cli/tokenmill
model=""
type=q8_0
shape=1b
threads=2
streams_list="1 4 16 64"
requests=4
max_tokens=64
prompt_lengths=32,64,128,256
rounds=2
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --llama-build) llama_build=$2; shift 2 ;;
    --tokenmilld) tokenmilld=$2; shift 2 ;;
    --tokenmill) tokenmill=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --type) type=$2; shift 2 ;;
    --shape) shape=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --streams) streams_list=$2; shift 2 ;;
    --requests-per-stream) requests=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --prompt-lengths) prompt_lengths=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,54p' "$0"; exit 0 ;;
    *) echo "serving_vs_llamacpp: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || out=$(mktemp -d /tmp/serving_vs_llamacpp.XXXXXX)
mkdir -p "$out"
out=$(cd "$out" && pwd)
loadgen=$(pwd)/tests/bench/serving_loadgen.py

for bin in "$tokenmilld" "$tokenmill"; do
  if [ ! -x "$bin" ]; then
    echo "serving_vs_llamacpp: $bin not found: build tokenmill first (README)" >&2
    exit 1
  fi
done

. tests/bench/llama_cpp.sh
llama_cpp_build "$llama_build" llama-server
llama_server=$(cd "$llama_build/bin" && pwd)/llama-server
llama_rev=$(llama_cpp_rev "$llama_build")

if [ -z "$model" ]; then
  model="$out/synth-$shape-$type.gguf"
  [ -f "$model" ] || "$tokenmill" model synth -o "$model" --shape "$shape" --type "$type" >/dev/null
fi
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")
name=$(basename "$model" .gguf)

# Same cores for both engines; taskset only when fewer than all.
cores=$(getconf _NPROCESSORS_ONLN)
pin=()
if [ "$threads" -lt "$cores" ]; then
  pin=(taskset -c "0-$((threads - 1))")
elif [ "$threads" -gt "$cores" ]; then
  echo "serving_vs_llamacpp: --threads $threads is above the $cores online cores" >&2
  exit 2
fi
longest=$(tr ',' '\n' <<<"$prompt_lengths" | sort -n | tail -1)
per_request_ctx=$((longest + max_tokens + 16))
api_key="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
api_key_sha=$(printf %s "$api_key" | sha256sum | cut -d' ' -f1)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls URL until it answers 200, the engine's pid is gone, or 300 s pass.
wait_ready() {  # URL PID LOG [AUTH_HEADER]
  local url=$1 pid=$2 log=$3 auth=${4:-}
  local deadline=$((SECONDS + 300))
  until curl -fsS -o /dev/null ${auth:+-H "$auth"} "$url" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "serving_vs_llamacpp: engine exited before it was ready; log $log:" >&2
      tail -20 "$log" >&2
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "serving_vs_llamacpp: $url not ready after 300 s; log $log" >&2
      return 1
    fi
    sleep 0.2  # polling interval, not a synchronisation point
  done
}

engine_pid=""
stop_engine() {
  if [ -n "$engine_pid" ]; then
    kill -TERM "$engine_pid" 2>/dev/null || true
    wait "$engine_pid" 2>/dev/null || true
    engine_pid=""
  fi
}
trap stop_engine EXIT

# Starts ENGINE for STREAMS on PORT; sets engine_pid and auth (or fails).
start_engine() {  # ENGINE STREAMS PORT TAG
  local engine=$1 streams=$2 port=$3 tag=$4
  local log="$out/$tag.log"
  auth=""
  if [ "$engine" = llama ]; then
    "${pin[@]}" "$llama_server" -m "$model" --host 127.0.0.1 --port "$port" \
      -t "$threads" -tb "$threads" -np "$streams" -c $((streams * per_request_ctx)) \
      --cont-batching -ctk f16 -ctv f16 --no-webui >"$log" 2>&1 &
    engine_pid=$!
    wait_ready "http://127.0.0.1:$port/health" "$engine_pid" "$log"
  else
    local dir="$out/$tag.d"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    cat >"$dir/tokenmill.toml" <<EOF
[node]
name = "bench"
data_dir = "$dir/data"
model_roots = []

[api]
socket = "$dir/s.sock"
tcp = "127.0.0.1:$port"

[metrics]
listen = ""

[[device]]
match = "cpu"
threads = $threads

[[model]]
id = "$name"
path = "$model"
device = "cpu"
max_seqs = $streams
context = $per_request_ctx

[[tenant]]
name = "bench"
api_keys_sha256 = ["$api_key_sha"]
EOF
    "${pin[@]}" "$tokenmilld" --config "$dir/tokenmill.toml" --log-target stderr >"$log" 2>&1 &
    engine_pid=$!
    auth="Authorization: Bearer $api_key"
    wait_ready "http://127.0.0.1:$port/readyz" "$engine_pid" "$log"
    local deadline=$((SECONDS + 300))
    until curl -fsS -H "$auth" "http://127.0.0.1:$port/v1/models" 2>/dev/null | grep -q "\"$name\""; do
      if ! kill -0 "$engine_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
        echo "serving_vs_llamacpp: tokenmilld did not list $name; log $log" >&2
        tail -20 "$log" >&2
        return 1
      fi
      sleep 0.2  # polling interval
    done
  fi
}

: >"$out/runs.jsonl"
for round in $(seq 1 "$rounds"); do
  order="llama tokenmill"
  [ $((round % 2)) -eq 0 ] && order="tokenmill llama"
  for streams in $streams_list; do
    for engine in $order; do
      tag="$engine.s$streams.r$round"
      port=$(free_port)
      start_engine "$engine" "$streams" "$port" "$tag"
      load=$(uptime | sed 's/.*load average: //')
      rc=0
      python3 "$loadgen" --url "http://127.0.0.1:$port" --api-key "$api_key" --model "$name" \
        --engine "$engine" --streams "$streams" --requests-per-stream "$requests" \
        --max-tokens "$max_tokens" --prompt-lengths "$prompt_lengths" --gguf "$model" \
        >"$out/$tag.json" || rc=$?
      stop_engine
      python3 - "$out/$tag.json" "$round" "$load" "$rc" "$engine" "$streams" \
        >>"$out/runs.jsonl" <<'EOF'
import json, sys
path, round_, load, rc, engine, streams = sys.argv[1:]
try:
    r = json.load(open(path))
except ValueError:
    r = {"engine": engine, "streams": int(streams),
         "fatal": "load generator wrote no result (exit %s)" % rc}
r["round"] = int(round_)
r["load"] = load
print(json.dumps(r))
print("round %s streams %s %s: %s (load %s)" % (
    round_, streams, engine,
    r.get("fatal") or "%s tokens/s, TTFT p50 %s ms, ITL p50 %s ms, %d errors" % (
        r["tokens_per_s"], r["ttft_ms_p50"], r["itl_ms_p50"], r["errors"]),
    load), file=sys.stderr)
EOF
    done
  done
done

python3 - "$out/runs.jsonl" "$llama_rev" "$threads" "$name" "$requests" "$max_tokens" <<'EOF'
import json, statistics, sys
path, rev, threads, name, requests, max_tokens = sys.argv[1:]
runs = [json.loads(l) for l in open(path)]
loads = [float(r["load"].split(",")[0]) for r in runs]
print("%s, llama.cpp %s, %s threads, %s requests/stream x %s tokens, 1-min load before runs %.2f-%.2f"
      % (name, rev, threads, requests, max_tokens, min(loads), max(loads)))
print("median over rounds (min-max); ratio = tokenmill / llama.cpp tokens/s, median (worst-best pairing)")
def get(engine, streams, key):
    return [r[key] for r in runs if r["engine"] == engine and r["streams"] == streams
            and r.get(key) is not None and not r.get("errors") and "fatal" not in r]
def span(v):
    if not v:
        return "-"
    if len(v) == 1:
        return "%.1f" % v[0]
    return "%.1f (%.1f-%.1f)" % (statistics.median(v), min(v), max(v))
for s in sorted({r["streams"] for r in runs}):
    print("\nstreams %d" % s)
    print("  %-16s %26s %26s" % ("", "llama.cpp", "tokenmill"))
    for key, label in (("tokens_per_s", "agg tokens/s"), ("ttft_ms_p50", "TTFT p50 ms"),
                       ("ttft_ms_p95", "TTFT p95 ms"), ("itl_ms_p50", "ITL p50 ms"),
                       ("itl_ms_p95", "ITL p95 ms"), ("loadgen_cpu_share", "loadgen CPU %")):
        scale = 100.0 if key == "loadgen_cpu_share" else 1.0
        print("  %-16s %26s %26s" % (label, span([x * scale for x in get("llama", s, key)]),
                                     span([x * scale for x in get("tokenmill", s, key)])))
    l, t = get("llama", s, "tokens_per_s"), get("tokenmill", s, "tokens_per_s")
    if l and t:
        print("  %-16s %26s" % ("ratio", "%.2fx (%.2f-%.2f)" % (
            statistics.median(t) / statistics.median(l), min(t) / max(l), max(t) / min(l))))
    bad = [r for r in runs if r["streams"] == s and (r.get("errors") or "fatal" in r)]
    for r in bad:
        print("  FAILED %s round %d: %s" % (r["engine"], r["round"],
              r.get("fatal") or "%d errors, e.g. %s" % (r["errors"], r["first_errors"][:1])))
    for r in sorted((r for r in runs if r["streams"] == s), key=lambda r: (r["round"], r["engine"])):
        print("  load before %s round %d: %s" % (r["engine"], r["round"], r["load"]))
EOF
echo "raw outputs: $out" >&2
