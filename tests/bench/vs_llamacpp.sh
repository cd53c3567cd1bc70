#!/usr/bin/env bash
# tokenmill next to llama.cpp on the same GGUF files, same machine, same
# threads, interleaved round by round, with ratios and their spread. Not run
# in CI; every speed claim against llama.cpp quotes this script's output.
#
#   bash tests/bench/vs_llamacpp.sh [options]
#     --llama-build DIR   a llama.cpp build directory holding bin/llama-bench and
#                         bin/llama-batched-bench (default: build/llama.cpp/build,
#                         built on first use by tests/bench/llama_cpp.sh from the
#                         sources the npm package node-llama-cpp@3.22.x carries
#                         as a git bundle)
#     --tokenmill PATH    the tokenmill CLI (default: build/release/daemon/cli/tokenmill)
#     --types "f16 q8_0"  weight types to compare (synthesized 1B-shape files)
#     --models "A B"      GGUF files to compare instead of synthesized ones
#     --threads N         threads for both engines (default 2)
#     --rounds N          interleaved rounds (default 2)
#     --batches LIST      decode batch sizes (default 1,4,16,32)
#     --out DIR           keep raw outputs and the table here (default: a temp dir)
#
# Figures: pp512 (prompt tokens/s, one sequence) and tg128 at each batch
# size (aggregate generated tokens/s). llama.cpp: llama-bench for pp512 and
# batch 1, llama-batched-bench (-npp 8 -ntg 128, KV f16) for batches > 1.
# tokenmill: `tokenmill bench` (KV f16, the daemon's default). The load
# average is recorded before every run: compare rounds only on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

llama_build=build/llama.cpp/build
tokenmill=build/release/daemon/cli/tokenmill
types="f16 q8_0"
models=""
threads=2
rounds=2
batches=1,4,16,32
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --llama-build) llama_build=$2; shift 2 ;;
    --tokenmill) tokenmill=$2; shift 2 ;;
    --types) types=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "vs_llamacpp: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || out=$(mktemp -d /tmp/vs_llamacpp.XXXXXX)
mkdir -p "$out"

if [ ! -x "$tokenmill" ]; then
  echo "vs_llamacpp: $tokenmill not found: build tokenmill first (README)" >&2
  exit 1
fi

. tests/bench/llama_cpp.sh
llama_cpp_build "$llama_build" llama-bench llama-batched-bench
llama_rev=$(llama_cpp_rev "$llama_build")

if [ -z "$models" ]; then
  for t in $types; do
    f="$out/synth-1b-$t.gguf"
    [ -f "$f" ] || "$tokenmill" model synth -o "$f" --shape 1b --type "$t" >/dev/null
    models="$models $f"
  done
fi

max_batch=${batches##*,}
for round in $(seq 1 "$rounds"); do
  for m in $models; do
    name=$(basename "$m" .gguf)
    # Alternate which engine goes first so drift in the machine's state
    # falls on both.
    order="llama tokenmill"
    [ $((round % 2)) -eq 0 ] && order="tokenmill llama"
    for engine in $order; do
      load=$(cut -d' ' -f1 /proc/loadavg)
      if [ "$engine" = llama ]; then
        "$llama_build/bin/llama-bench" -m "$m" -t "$threads" -p 512 -n 128 -r 3 -o json \
          >"$out/llama-bench.$name.$round.json" 2>/dev/null
        if [ "$batches" != 1 ]; then
          "$llama_build/bin/llama-batched-bench" -m "$m" -t "$threads" -tb "$threads" \
            -c $(( (8 + 128) * max_batch + 64 )) -b 2048 -ub 512 -npp 8 -ntg 128 \
            -npl "$batches" --output-format jsonl 2>/dev/null |
            grep '^{' >"$out/llama-batched.$name.$round.jsonl"
        fi
      else
        "$tokenmill" bench "$m" --threads "$threads" --prompt 512 --gen 128 \
          --batches "$batches" --repetitions 3 --json >"$out/tokenmill.$name.$round.json" 2>/dev/null
      fi
      echo "$engine $name $round $load" >>"$out/loads.txt"
      echo "round $round $name $engine done (load $load)" >&2
    done
  done
done

python3 - "$out" "$llama_rev" "$threads" <<'EOF'
import glob, json, os, statistics, sys
out, rev, threads = sys.argv[1], sys.argv[2], sys.argv[3]
rows = {}  # (model, figure) -> {"llama": [...], "tokenmill": [...]}
def add(model, fig, engine, value):
    rows.setdefault((model, fig), {"llama": [], "tokenmill": []})[engine].append(value)
for f in sorted(glob.glob(os.path.join(out, "llama-bench.*.json"))):
    model = os.path.basename(f).split(".")[1]
    for r in json.load(open(f)):
        if r["n_prompt"] and not r["n_gen"]:
            add(model, "pp512", "llama", r["avg_ts"])
        elif r["n_gen"] and not r["n_prompt"]:
            add(model, "tg128 b=1", "llama", r["avg_ts"])
for f in sorted(glob.glob(os.path.join(out, "llama-batched.*.jsonl"))):
    model = os.path.basename(f).split(".")[1]
    for line in open(f):
        r = json.loads(line)
        if r["pl"] > 1:
            add(model, "tg128 b=%d" % r["pl"], "llama", r["speed_tg"])
for f in sorted(glob.glob(os.path.join(out, "tokenmill.*.json"))):
    model = os.path.basename(f).split(".")[1]
    r = json.load(open(f))
    add(model, "pp512", "tokenmill", r["prompt_tokens_per_second"])
    for d in r["decode"]:
        add(model, "tg128 b=%d" % d["batch"], "tokenmill", d["tokens_per_second"])
    add(model, "bound b=1 (median read bw)", "tokenmill", r["bound_tokens_per_second"])
loads = [float(l.split()[3]) for l in open(os.path.join(out, "loads.txt"))]
print("llama.cpp %s, %s threads, load average before runs %.2f-%.2f" % (rev, threads, min(loads), max(loads)))
print("%-22s %-28s %18s %18s %16s" % ("model", "figure (tokens/s)", "llama.cpp", "tokenmill", "ratio"))
def span(v):
    return "%.1f (%.1f-%.1f)" % (statistics.median(v), min(v), max(v)) if v else "-"
for (model, fig), v in sorted(rows.items()):
    l, t = v["llama"], v["tokenmill"]
    ratio = "-"
    if l and t:
        ratio = "%.2fx (%.2f-%.2f)" % (statistics.median(t) / statistics.median(l), min(t) / max(l), max(t) / min(l))
    print("%-22s %-28s %18s %18s %16s" % (model, fig, span(l), span(t), ratio))
EOF
echo "raw outputs: $out" >&2
