// Streams one chat completion through the official openai client and prints
// {models, chunks, text, finish_reason, usage} as JSON. Exits 1 on any error.
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
  console.log(JSON.stringify({ models, chunks, text, finish_reason: finish, usage }));
}

main().catch((err) => {
  console.error('openai client failed:', err && err.stack ? err.stack : err);
  process.exit(1);
});
