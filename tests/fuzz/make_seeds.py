#!/usr/bin/env python3
"""Writes the binary and generated seeds of tests/fuzz/corpus (GGUF,
safetensors, tokenizer.json). The text seeds (HTTP, OpenAI, TOML, chat) are
written by hand and checked in; so are this script's outputs, so that a fuzz
run needs no Python. Rerun after changing it:

    python3 tests/fuzz/make_seeds.py tests/fuzz/corpus
"""
import json
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")


def write(harness, name, data):
    d = os.path.join(out, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- GGUF ----------------------------------------------------------------------
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


def gguf(version, kvs, tensors, alignment=32):
    """tensors: (name, dims, ggml_type, nbytes)."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    infos = b""
    offset = 0
    for name, dims, ttype, nbytes in tensors:
        infos += gstr(name) + struct.pack("<I", len(dims))
        infos += b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ttype, offset)
        offset += (nbytes + alignment - 1) // alignment * alignment
    body = head + infos
    body += b"\0" * ((-len(body)) % alignment)
    data = b""
    for _, _, _, nbytes in tensors:
        chunk = bytes(i % 251 for i in range(nbytes))
        data += chunk + b"\0" * ((-nbytes) % alignment)
    return body + data


F32, F16, Q8_0 = 0, 1, 8
write("fuzz_gguf_header", "minimal_v3.gguf", gguf(3, [], []))
write("fuzz_gguf_header", "metadata_v3.gguf", gguf(3, [
    kv("general.architecture", 8, gstr("llama")),
    kv("general.alignment", 4, struct.pack("<I", 32)),
    kv("llama.context_length", 4, struct.pack("<I", 128)),
    kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
    kv("tokenizer.ggml.add_bos_token", 7, b"\1"),
    kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + gstr("<s>") + gstr("a") + gstr("b")),
    kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<fff", 0, -1, -2)),
    kv("x.u64", 10, struct.pack("<Q", 7)), kv("x.i64", 11, struct.pack("<q", -7)),
    kv("x.f64", 12, struct.pack("<d", 0.5)), kv("x.i8", 1, b"\xff"), kv("x.u16", 2, b"\1\0"),
], []))
write("fuzz_gguf_header", "tensors_v3.gguf", gguf(3, [
    kv("general.architecture", 8, gstr("llama")),
], [("token_embd.weight", [8, 4], F32, 128), ("blk.0.attn_q.weight", [32, 2], F16, 128),
    ("output.weight", [32, 1], Q8_0, 34)]))
write("fuzz_gguf_header", "tensors_v2_align64.gguf", gguf(2, [
    kv("general.alignment", 4, struct.pack("<I", 64)),
], [("a", [4], F32, 16), ("b", [2, 2], F32, 16)], alignment=64))

# --- safetensors ---------------------------------------------------------------
def safetensors(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + data


write("fuzz_safetensors_header", "two_tensors.safetensors", safetensors({
    "__metadata__": {"format": "pt"},
    "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]},
}, bytes(24)))
write("fuzz_safetensors_header", "dtypes.safetensors", safetensors({
    "f16": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},
    "i64": {"dtype": "I64", "shape": [1], "data_offsets": [2, 10]},
    "u8": {"dtype": "U8", "shape": [2], "data_offsets": [10, 12]},
    "empty": {"dtype": "F32", "shape": [0], "data_offsets": [12, 12]},
    "bool": {"dtype": "BOOL", "shape": [], "data_offsets": [12, 13]},
}, bytes(13)))
write("fuzz_safetensors_header", "empty_header.safetensors", safetensors({}, b""))

# --- tokenizer.json ------------------------------------------------------------
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()


def spell(raw):
    return "".join(B2U[b] for b in raw.encode())


def byte_level(pretok):
    vocab = {B2U[b]: b for b in range(256)}
    merges = []
    for l, r in [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), (" ", "w"), ("o", "r")]:
        vocab.setdefault(spell(l + r), len(vocab))
        merges.append(spell(l) + " " + spell(r))
    added = [{"id": len(vocab) + i, "content": c, "special": True}
             for i, c in enumerate(["<|begin_of_text|>", "<|eot_id|>"])]
    return {"version": "1.0", "added_tokens": added, "normalizer": None,
            "pre_tokenizer": pretok, "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "unk_token": None, "byte_fallback": False,
                      "vocab": vocab, "merges": merges}}


llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
write("fuzz_hf_tokenizer", "byte_level_gpt2.json",
      json.dumps(byte_level({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True})))
write("fuzz_hf_tokenizer", "byte_level_llama3.json", json.dumps(byte_level(
    {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": llama3}, "behavior": "Isolated"},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]})) +
    "\0" + json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                       "add_bos_token": True,
                       "chat_template": "{{ '<|start_header_id|>' }}"}))
SP = "\u2581"
sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    sp_vocab["<0x%02X>" % b] = 3 + b
for piece in [SP, "h", "e", "l", "o", SP + "h", "he", "ll"]:
    sp_vocab.setdefault(piece, len(sp_vocab))
write("fuzz_hf_tokenizer", "sentencepiece.json", json.dumps({
    "added_tokens": [{"id": i, "content": c, "special": True}
                     for i, c in enumerate(["<unk>", "<s>", "</s>"])],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": SP},
        {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
    "pre_tokenizer": None,
    "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
    "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": True, "vocab": sp_vocab,
              "merges": ["h e", "l l", SP + " h"]}}) +
    "\0" + json.dumps({"bos_token": {"content": "<s>"}, "eos_token": "</s>",
                       "add_bos_token": True, "add_eos_token": False}))
