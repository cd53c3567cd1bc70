// Streams forced tool calls through the official openai client, one model per
// argument ("FORMAT=MODEL": hermes and mistral with tool_choice "required",
// llama3 with a named function), gathers the calls from the stream's deltas,
// then sends each call back as history with a tool result (tool_choice
// "none"). Prints {MODEL: {calls, finish_reason, chunks, followup: {finish_reason,
// content}}} as JSON; exits 1 on any error.
const OpenAI = require('openai');

const tools = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather in a city for the next days',
      parameters: {
        type: 'object',
        properties: {
          city: { enum: ['Paris', 'Oslo', 'Rome'] },
          days: { type: 'integer', minimum: 1, maximum: 7 },
        },
        required: ['city', 'days'],
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'get_time',
      parameters: {
        type: 'object',
        properties: { zone: { enum: ['UTC', 'CET'] } },
        required: ['zone'],
      },
    },
  },
];

async function main() {
  const [baseURL, apiKey, ...models] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
  const out = {};
  for (const spec of models) {
    const [format, model] = spec.split('=');
    const question = { role: 'user', content: 'What is the weather in Oslo this week?' };
    const toolChoice = format === 'llama3'
      ? { type: 'function', function: { name: 'get_weather' } }
      : 'required';
    const stream = await client.chat.completions.create({
      model,
      messages: [question],
      tools,
      tool_choice: toolChoice,
      max_tokens: 120,
      temperature: 1,
      seed: 11,
      stream: true,
    });
    const calls = [];
    let finish = null;
    let chunks = 0;
    let order = 'ok';
    for await (const chunk of stream) {
      chunks += 1;
      for (const choice of chunk.choices) {
        if (choice.finish_reason) finish = choice.finish_reason;
        for (const d of (choice.delta && choice.delta.tool_calls) || []) {
          if (!calls[d.index]) {
            if (!d.function || !d.function.name || !d.id) order = 'a call began without its name or id';
            calls[d.index] = { id: d.id, name: d.function.name, arguments: '' };
          }
          if (d.function && d.function.arguments) calls[d.index].arguments += d.function.arguments;
        }
      }
    }
    const followup = await client.chat.completions.create({
      model,
      messages: [
        question,
        {
          role: 'assistant',
          content: null,
          tool_calls: calls.map((c) => ({
            id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments },
          })),
        },
        ...calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: '{"celsius": 21}' })),
      ],
      tools,
      tool_choice: 'none',
      max_tokens: 4,
      temperature: 0,
    });
    out[model] = {
      calls, finish_reason: finish, chunks, order,
      followup: {
        finish_reason: followup.choices[0].finish_reason,
        content: followup.choices[0].message.content,
      },
    };
  }
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
