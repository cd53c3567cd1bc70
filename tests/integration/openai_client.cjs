// Streams one chat completion through the official openai client, then asks
// for a completion with a logit_bias of +100 on token 300 (sampled at
// temperature 1) and streams a chat completion constrained by a JSON schema
// (response_format), a chat with two choices (n) and an echoed prompt with
// logprobs, and prints {models, chunks, text, finish_reason, usage, multi:
// {texts, finish_reasons, usage}, echo: {text, logprobs, usage},
// biased: {text, usage}, structured: {text, finish_reason, parsed}} as JSON.
// Exits 1 on any error.
const OpenAI = require('openai');

async function main() {
  const [baseURL, apiKey, model] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  const stream = await client.chat.completions.create({
    model,
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Say something about token factories.' },
    ],
    max_tokens: 12,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    ignore_eos: true,
  });
  let chunks = 0;
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta && choice.delta.content) text += choice.delta.content;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  const biased = await client.completions.create({
    model,
    prompt: 'Token factories',
    max_tokens: 6,
    temperature: 1,
    logit_bias: { 300: 100 },
    ignore_eos: true,
  });
  const structuredStream = await client.chat.completions.create({
    model,
    messages: [{ role: 'user', content: 'A colour and a count, please.' }],
    max_tokens: 200,
    temperature: 1,
    seed: 7,
    stream: true,
    response_format: {
      type: 'json_schema',
      json_schema: {
        name: 'colour_count',
        strict: true,
        schema: {
          type: 'object',
          properties: {
            colour: { enum: ['red', 'green', 'blue'] },
            count: { type: 'integer', minimum: 1, maximum: 9 },
          },
          required: ['colour', 'count'],
          additionalProperties: false,
        },
      },
    },
  });
  let structuredText = '';
  let structuredFinish = null;
  for await (const chunk of structuredStream) {
    for (const choice of chunk.choices) {
      if (choice.delta && choice.delta.content) structuredText += choice.delta.content;
      if (choice.finish_reason) structuredFinish = choice.finish_reason;
    }
  }
  // Two choices in one stream, told apart by their index.
  const multiStream = await client.chat.completions.create({
    model,
    messages: [{ role: 'user', content: 'Two answers, please.' }],
    n: 2,
    max_tokens: 5,
    temperature: 1,
    seed: 3,
    stream: true,
    stream_options: { include_usage: true },
    ignore_eos: true,
  });
  const multiText = ['', ''];
  const multiFinish = [null, null];
  let multiUsage = null;
  for await (const chunk of multiStream) {
    if (chunk.usage) multiUsage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta && choice.delta.content) multiText[choice.index] += choice.delta.content;
      if (choice.finish_reason) multiFinish[choice.index] = choice.finish_reason;
    }
  }
  // The prompt echoed with its tokens' logprobs (scoring a text).
  const echoed = await client.completions.create({
    model,
    prompt: 'Score this sentence.',
    max_tokens: 1,
    echo: true,
    logprobs: 1,
    ignore_eos: true,
  });
  console.log(JSON.stringify({
    models, chunks, text, finish_reason: finish, usage,
    echo: { text: echoed.choices[0].text, logprobs: echoed.choices[0].logprobs, usage: echoed.usage },
    multi: { texts: multiText, finish_reasons: multiFinish, usage: multiUsage },
    biased: { text: biased.choices[0].text, usage: biased.usage },
    structured: {
      text: structuredText, finish_reason: structuredFinish, parsed: JSON.parse(structuredText),
    },
  }));
}

main().catch((err) => {
  console.error('openai client failed:', err && err.stack ? err.stack : err);
  process.exit(1);
});
