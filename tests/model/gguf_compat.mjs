// Parses a GGUF written by tokenmill with @huggingface/gguf and checks what
// it finds against the expectation JSON the writer tool produced.
//   node gguf_compat.mjs NPM_PREFIX FILE.gguf EXPECT.json
import { readFileSync, statSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [prefix, file, expectPath] = process.argv.slice(2);
const { gguf } = await import(
  pathToFileURL(`${prefix}/node_modules/@huggingface/gguf/dist/index.mjs`).href
);
const expect = JSON.parse(readFileSync(expectPath, "utf8"));
const { metadata, typedMetadata, tensorInfos, tensorDataOffset, littleEndian } = await gguf(file, {
  allowLocalFile: true,
  typedMetadata: true,
});

let failures = 0;
function check(ok, what) {
  if (!ok) {
    failures++;
    console.error(`MISMATCH: ${what}`);
  }
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

check(littleEndian === true, "littleEndian");
check(Number(metadata.version) === expect.version, `version ${metadata.version}`);
check(metadata["general.architecture"] === expect.architecture, "architecture");
check(Number(metadata.tensor_count) === expect.tensors.length,
      `tensor count ${metadata.tensor_count} != ${expect.tensors.length}`);
check(tensorInfos.length === expect.tensors.length, "tensorInfos length");

// Tensors: names in order, shapes (ne order), ggml types; offsets aligned,
// in bounds and non-overlapping.
const size = BigInt(statSync(file).size);
check(tensorDataOffset % 32n === 0n, `data offset ${tensorDataOffset} not aligned`);
let end = 0n;
let total = 0n;
const blockBytes = { 0: [1n, 4n], 1: [1n, 2n], 30: [1n, 2n], 8: [32n, 34n], 2: [32n, 18n] };
expect.tensors.forEach((want, i) => {
  const got = tensorInfos[i];
  if (!got) return;
  check(got.name === want.name, `tensor ${i} name ${got.name} != ${want.name}`);
  check(same(got.shape.map(Number), want.ne), `${want.name} shape ${got.shape} != ${want.ne}`);
  check(got.dtype === want.ggml_type, `${want.name} dtype ${got.dtype} != ${want.ggml_type}`);
  check(got.offset % 32n === 0n, `${want.name} offset ${got.offset} not aligned`);
  check(got.offset >= end, `${want.name} overlaps the previous tensor`);
  const [elems, bytes] = blockBytes[got.dtype] ?? [1n, 0n];
  const n = got.shape.reduce((a, b) => a * b, 1n);
  const nbytes = (n / elems) * bytes;
  end = got.offset + nbytes;
  total += nbytes;
  check(tensorDataOffset + end <= size, `${want.name} runs past the end of the file`);
});
check(total === BigInt(expect.weight_bytes), `tensor bytes ${total} != ${expect.weight_bytes}`);

// Metadata values and their GGUF types.
for (const [key, want] of Object.entries(expect.metadata)) {
  const got = typedMetadata[key];
  if (!got) {
    check(false, `metadata key ${key} missing`);
    continue;
  }
  check(got.type === want.type, `${key} type ${got.type} != ${want.type}`);
  if (want.subType !== undefined) check(got.subType === want.subType, `${key} subType ${got.subType}`);
  let value = got.value;
  if (typeof value === "bigint") value = Number(value);
  if (want.type === 6) {
    check(Math.abs(value - want.value) <= Math.abs(want.value) * 1e-6, `${key} ${value} != ${want.value}`);
  } else {
    check(same(value, want.value), `${key} value differs: ${JSON.stringify(value).slice(0, 200)}`);
  }
}

const summary = `${expect.architecture}: ${tensorInfos.length} tensors, ` +
  `${Object.keys(expect.metadata).length} keys checked, ` +
  `${metadata["tokenizer.ggml.tokens"].length} tokens`;
if (failures > 0) {
  console.error(`FAIL ${file}: ${failures} mismatches (${summary})`);
  process.exit(1);
}
console.log(`OK ${file}: ${summary}`);
