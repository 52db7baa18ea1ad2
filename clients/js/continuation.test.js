// A stream whose node fails midway goes on on another node, and each published client reads one
// unbroken stream. The test breaks the node under the stream itself: a simulated GPU fault (XID:
// the GPU falls off the bus, the model's requests are lost) through the admin API, on the node the
// gateway has the stream in flight on. Simulated clusters only (HERD_ADMIN_KEY set).
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { Ollama } from 'ollama';
import { ChatOpenAI } from '@langchain/openai';
import { streamText } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { base, apiKey, chatModel, testTimeout, clientTimeout } from './env.js';

const adminKey = process.env.HERD_ADMIN_KEY;
const skip = !adminKey && 'needs HERD_ADMIN_KEY and simulated nodes (a GPU fault is injected)';
const opts = { timeout: testTimeout, skip };
// Long enough that the fault lands while the node is still generating, short enough that the
// prompt plus the partial answer fits the continuing node's context (4096 tokens).
const maxTokens = 1500;

async function admin(path, body) {
  const r = await fetch(`${base}/admin/v1${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { Authorization: `Bearer ${adminKey}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  assert.equal(r.status, 200, `${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

const broken = new Set();

/** Breaks the node the gateway has the (only) stream in flight on, and returns its id. */
async function breakServingNode() {
  const { nodes } = await admin('/nodes');
  const serving = nodes.filter((n) => n.gateway_in_flight > 0);
  assert.equal(serving.length, 1, `nodes with a stream in flight: ${JSON.stringify(nodes.map((n) => [n.id, n.gateway_in_flight]))}`);
  await admin(`/nodes/${serving[0].id}/fault`, { gpu: 0, kind: 'xid' });
  broken.add(serving[0].id);
  return serving[0].id;
}

/** Heals the broken nodes and waits until they are healthy again, so each test has two. */
async function heal() {
  for (const id of broken) await admin(`/nodes/${id}/fault`, { gpu: 0, kind: 'clear' });
  broken.clear();
  for (let i = 0; i < 100; i++) {
    const { nodes } = await admin('/nodes');
    if (nodes.every((n) => n.healthy)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail('the nodes did not recover from the fault');
}

after(async () => { if (adminKey) await heal(); });

/** Reads a stream of text pieces, breaking the node after the 5th; returns what it read. */
async function readBreaking(pieces) {
  let text = '', before = 0, after = 0, node = null;
  try {
    for await (const piece of pieces) {
      text += piece;
      if (node) after++;
      else if (++before === 5) node = await breakServingNode();
    }
  } finally {
    await heal(); // the next test gets both nodes, whatever happened here
  }
  assert.ok(node, 'the stream ended before the node could be broken');
  assert.ok(after > 0, 'nothing came after the node broke: the stream was not continued');
  return text;
}

describe('continued streams', () => {
  test('openai-node: one stream, one id, a finish_reason and usage', opts, async () => {
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, timeout: clientTimeout, maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: chatModel, messages: [{ role: 'user', content: 'Tell me a long story' }], max_tokens: maxTokens,
      stream: true, stream_options: { include_usage: true },
    });
    const ids = new Set();
    let finish = null, usage = null;
    const text = await readBreaking((async function* () {
      for await (const chunk of stream) {
        ids.add(chunk.id);
        if (chunk.usage) usage = chunk.usage;
        const c = chunk.choices[0];
        if (c?.finish_reason) finish = c.finish_reason;
        yield c?.delta?.content ?? '';
      }
    })());
    assert.equal(ids.size, 1, `ids ${[...ids]}`);
    assert.ok(['stop', 'length'].includes(finish), finish);
    assert.ok(text.length > 0);
    assert.ok(usage && usage.completion_tokens > 5 && usage.completion_tokens <= maxTokens, JSON.stringify(usage));
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  });

  test('openai-node: Responses stream, one response completed with the whole text and usage', opts, async () => {
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, timeout: clientTimeout, maxRetries: 0 });
    const stream = client.responses.stream({ model: chatModel, input: 'Tell me a long story', max_output_tokens: maxTokens });
    const types = new Set();
    const text = await readBreaking((async function* () {
      for await (const ev of stream) {
        types.add(ev.type);
        if (ev.type === 'response.output_text.delta') yield ev.delta;
      }
    })());
    const final = await stream.finalResponse();
    assert.ok(!types.has('error') && !types.has('response.failed'), [...types].join(' '));
    assert.ok(['completed', 'incomplete'].includes(final.status), final.status);
    assert.equal(final.output_text, text);
    assert.ok(final.usage && final.usage.output_tokens > 5 && final.usage.output_tokens <= maxTokens, JSON.stringify(final.usage));
    assert.equal(final.usage.total_tokens, final.usage.input_tokens + final.usage.output_tokens);
  });

  test('ollama-js: chat stream ends with done', opts, async () => {
    const ollama = new Ollama({ host: base, headers: { Authorization: `Bearer ${apiKey}` } });
    const stream = await ollama.chat({ model: chatModel, messages: [{ role: 'user', content: 'Tell me a long story' }], stream: true, options: { num_predict: maxTokens } });
    let last = null;
    await readBreaking((async function* () {
      for await (const part of stream) { last = part; yield part.message.content; }
    })());
    assert.equal(last.done, true);
    assert.ok(last.eval_count > 5, JSON.stringify(last));
  });

  test('LangChain ChatOpenAI stream', opts, async () => {
    const llm = new ChatOpenAI({ apiKey, configuration: { baseURL: `${base}/v1` }, model: chatModel, maxTokens, maxRetries: 0, timeout: clientTimeout });
    let full;
    await readBreaking((async function* () {
      for await (const chunk of await llm.stream('Tell me a long story')) { full = full ? full.concat(chunk) : chunk; yield chunk.content; }
    })());
    assert.ok(full.usage_metadata && full.usage_metadata.output_tokens > 5, JSON.stringify(full.usage_metadata));
  });

  test('Vercel ai streamText', opts, async () => {
    const herd = createOpenAICompatible({ name: 'herd', baseURL: `${base}/v1`, apiKey, includeUsage: true });
    const r = streamText({ model: herd(chatModel), prompt: 'Tell me a long story', maxOutputTokens: maxTokens, maxRetries: 0, onError: () => {} });
    const text = await readBreaking(r.textStream);
    assert.equal(text, await r.text);
    assert.ok(['stop', 'length'].includes(await r.finishReason));
  });
});
