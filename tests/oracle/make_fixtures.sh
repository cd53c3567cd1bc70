#!/usr/bin/env bash
# Regenerates tests/oracle/fixtures/*.json: llama.cpp's greedy ids and top-k
# logits for synthesized models, which oracle_test compares the CPU executor
# against. Not run in CI (CI reads the checked-in fixtures); run it when synth
# changes (oracle_test then says the fixtures are stale) or to add a case.
#
#   bash tests/oracle/make_fixtures.sh [--llama DIR] [--tokenmill PATH] [--only REGEX]
#     --llama DIR       llama.cpp source tree with a build in DIR/build holding
#                       libllama (default: build/llama.cpp; cloned from the npm
#                       package node-llama-cpp@3.22's git bundle and built
#                       CPU-only when absent)
#     --tokenmill PATH  the tokenmill CLI that synthesizes the models
#                       (default: build/dev/daemon/cli/tokenmill)
#     --only REGEX      write only the fixtures whose names match (bash =~)
#
# Each fixture records the llama.cpp commit, the synth options and the
# model file's FNV-1a 64 hash (oracle_test synthesizes the same file and
# checks the hash before comparing).
set -euo pipefail
cd "$(dirname "$0")/../.."

llama=build/llama.cpp
tokenmill=build/dev/daemon/cli/tokenmill
only=
while [ $# -gt 0 ]; do
  case "$1" in
    --llama) llama=$2; shift 2 ;;
    --tokenmill) tokenmill=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "make_fixtures: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ ! -x "$tokenmill" ]; then
  echo "make_fixtures: $tokenmill not found: build the tokenmill target first" >&2
  exit 1
fi

. tests/bench/llama_cpp.sh
llama_cpp_build "$llama/build" llama
commit=$(git -C "$llama" rev-parse HEAD)

work=$(mktemp -d /tmp/oracle.XXXXXX)
trap 'rm -rf "$work"' EXIT
c++ -std=c++17 -O2 -o "$work/llama_oracle" tests/oracle/llama_oracle.cc \
  -I"$llama/include" -I"$llama/ggml/include" -L"$llama/build/bin" -lllama -lggml -lggml-base \
  -Wl,-rpath,"$(cd "$llama/build/bin" && pwd)"

# Token id prompts (vocab 512): one token, a short one, a longer one.
prompts="17;300,42,7,256,99;5,411,87,23,160,333,64,2,498,71,129,250"
steps=10
top_k=6
# The shapes: dim 128 (qwen3: heads x head_dim 256 != dim), and for K-quants
# (rows of whole 256-value super-blocks) dim 256 (qwen3: 4 x 128).
dim=128
ffn=256
layers=2
window=0  # gemma3: sliding window (--sliding-window), llama.cpp's default pattern 6
experts=0  # mixture of experts (--experts, --experts-used)
experts_used=0

fixture() {  # name arch type head_dim seed extra-flags...
  local name=$1 arch=$2 type=$3 head_dim=$4 seed=$5
  shift 5
  if [ -n "$only" ] && ! [[ $name =~ $only ]]; then return 0; fi
  local file="$work/$name.gguf"
  local flags=(--dim "$dim" --layers "$layers" --heads 4 --kv-heads 2 --ffn "$ffn" --vocab 512
               --context 256 --arch "$arch" --type "$type" --seed "$seed")
  [ "$head_dim" = 0 ] || flags+=(--head-dim "$head_dim")
  [ "$window" = 0 ] || flags+=(--sliding-window "$window")
  [ "$experts" = 0 ] || flags+=(--experts "$experts" --experts-used "$experts_used")
  "$tokenmill" model synth -o "$file" "${flags[@]}" "$@" >/dev/null
  "$work/llama_oracle" "$file" --prompts "$prompts" --steps "$steps" --top-k "$top_k" \
    > "$work/$name.out"
  local tied=False rope=False linear=1.0 prev=
  for f in "$@"; do
    [ "$f" = --tied ] && tied=True
    [ "$f" = --llama3-rope ] && rope=True
    [ "$prev" = --rope-linear ] && linear=$f
    prev=$f
  done
  python3 - "$work/$name.out" "tests/oracle/fixtures/$name.json" <<PY
import json, sys
out = json.load(open(sys.argv[1]))
fixture = {
  "llama_cpp_commit": "$commit",
  "model": {"arch": "$arch", "type": "$type", "dim": $dim, "layers": $layers, "heads": 4,
            "kv_heads": 2, "head_dim": $head_dim, "ffn": $ffn, "vocab": 512, "context": 256,
            "seed": $seed, "tied": $tied, "llama3_rope": $rope, "rope_linear": $linear,
            "sliding_window": $window,
            "experts": $experts, "experts_used": $experts_used},
  "file_fnv1a64": out["file_fnv1a64"],
  "kv_type": "f32",
  "cases": out["cases"],
}
# One line per step: small diffs when a fixture is regenerated.
cases = fixture.pop("cases")
text = json.dumps(fixture, indent=1)[:-2] + ',\n "cases": [\n'
text += ',\n'.join(
    '  {"prompt": %s, "steps": [\n%s]}' % (json.dumps(c["prompt"]), ',\n'.join(
        '   ' + json.dumps(s, separators=(',', ':')) for s in c["steps"])) for c in cases)
text += '\n ]\n}\n'
json.loads(text)
open(sys.argv[2], "w").write(text)
PY
  echo "wrote tests/oracle/fixtures/$name.json"
}

for arch in llama qwen2 qwen3; do
  head_dim=0
  [ "$arch" = qwen3 ] && head_dim=64
  for type in f32 f16 q8_0 q4_0; do
    fixture "${arch}_${type}" "$arch" "$type" "$head_dim" 3
  done
done
fixture llama_f16_tied_llama3rope llama f16 0 4 --tied --llama3-rope
dim=256
ffn=512
for type in q4_k q5_k q6_k q4_k_m; do
  fixture "llama_$type" llama "$type" 0 5
done
fixture qwen2_q5_k_m qwen2 q5_k_m 0 5
fixture qwen3_q4_k_m qwen3 q4_k_m 128 5
fixture qwen3_q6_k qwen3 q6_k 128 5
# Gemma 3: six layers (five local, the last global, as llama.cpp's default
# pattern), window 6 under prompts + steps of up to 22 positions, tied.
dim=128
ffn=256
layers=6
window=6
for type in f32 f16 q8_0 q4_0; do
  fixture "gemma3_$type" gemma3 "$type" 64 6 --tied
done
# Gemma 3 4B+: linear RoPE scaling (factor 8) of the global layers. The
# synthesized model has RoPE base 10000 on both kinds of layer, so the factor
# alone sets the global layer apart.
fixture gemma3_f16_rope_linear8 gemma3 f16 64 6 --tied --rope-linear 8
# Mixtral (llama with experts) and Qwen3-MoE: 8 experts, 2 per token, three
# layers; the K-quant at dim 256.
dim=128
ffn=256
layers=3
window=0
experts=8
experts_used=2
for type in f32 f16 q8_0 q4_0; do
  fixture "mixtral_$type" llama "$type" 0 7
  fixture "qwen3moe_$type" qwen3moe "$type" 64 7
done
dim=256
ffn=512
fixture mixtral_q4_k llama q4_k 0 8
fixture qwen3moe_q6_k qwen3moe q6_k 128 8
echo "llama.cpp $commit"
