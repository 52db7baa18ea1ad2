// Two real `ollama serve` behind herd: the one under three streams, the openai npm SDK's chat and
// Responses streams and ollama-js's chat stream, is killed mid-stream (serve and its runner, the
// whole process group), and all three complete on the other node without an error. cmd/herd's TestRealOllamaKilledMidStream
// starts the cluster (its model's answers run until num_predict) and kills the node when this
// suite asks at HERD_KILL_HOOK; elsewhere the test skips.
import { writeFileSync } from 'node:fs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { Ollama } from 'ollama';
import { base, apiKey, chatModel, testTimeout, clientTimeout } from './env.js';

const hook = process.env.HERD_KILL_HOOK;
const numPredict = Number(process.env.HERD_KILL_NUM_PREDICT);
// Where the streams' texts are written, for the Go test to check each against the prefix its
// continuing agent was given.
const resultsFile = process.env.HERD_KILL_RESULTS;
const skip = !hook && 'needs HERD_KILL_HOOK: run by cmd/herd TestRealOllamaKilledMidStream';
// Pieces each stream reads before the kill is asked for.
const piecesBefore = 5;

test('openai-node chat and Responses and ollama-js streams complete after their Ollama is killed', { timeout: testTimeout, skip }, async () => {
  const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey, timeout: clientTimeout, maxRetries: 0 });
  const ollama = new Ollama({ host: base, headers: { Authorization: `Bearer ${apiKey}` } });

  // The kill is asked for once all three streams have read piecesBefore pieces; killed is the hook's
  // answer (the node, and how many streams the gateway had in flight on it then).
  let killed = null;
  let arrived = 0;
  let allRunning;
  const running = new Promise((resolve) => { allRunning = resolve; });
  const arrive = () => { if (++arrived === 3) allRunning(); };
  const kill = running.then(async () => {
    const r = await fetch(hook, { method: 'POST' });
    const text = await r.text();
    assert.equal(r.status, 200, text);
    killed = JSON.parse(text);
  });

  async function viaOpenAI() {
    const stream = await openai.chat.completions.create({
      model: chatModel, messages: [{ role: 'user', content: 'Tell me a long story' }], max_tokens: numPredict,
      stream: true, stream_options: { include_usage: true },
    });
    const r = { before: 0, after: 0, finish: null, usage: null, ids: new Set(), text: '' };
    for await (const chunk of stream) {
      r.ids.add(chunk.id);
      if (chunk.usage) r.usage = chunk.usage;
      const c = chunk.choices[0];
      if (c?.finish_reason) r.finish = c.finish_reason;
      const piece = c?.delta?.content ?? '';
      if (!piece) continue;
      r.text += piece;
      if (killed) r.after++;
      else if (++r.before === piecesBefore) arrive();
    }
    return r;
  }

  async function viaOllama() {
    const stream = await ollama.chat({
      model: chatModel, messages: [{ role: 'user', content: 'Tell me a long story' }], stream: true,
      options: { num_predict: numPredict },
    });
    const r = { before: 0, after: 0, last: null, text: '' };
    for await (const part of stream) {
      r.last = part;
      const piece = part.message?.content ?? '';
      if (!piece) continue;
      r.text += piece;
      if (killed) r.after++;
      else if (++r.before === piecesBefore) arrive();
    }
    return r;
  }

  async function viaResponses() {
    const stream = openai.responses.stream({ model: chatModel, input: 'Tell me a long story', max_output_tokens: numPredict });
    const r = { before: 0, after: 0, types: new Set(), text: '' };
    for await (const ev of stream) {
      r.types.add(ev.type);
      if (ev.type !== 'response.output_text.delta' || !ev.delta) continue;
      r.text += ev.delta;
      if (killed) r.after++;
      else if (++r.before === piecesBefore) arrive();
    }
    r.final = await stream.finalResponse();
    return r;
  }

  const [o, l, p] = await Promise.all([viaOpenAI(), viaOllama(), viaResponses()]);
  await kill;
  console.log(JSON.stringify({ killed, openai: { before: o.before, after: o.after, finish: o.finish, usage: o.usage, chars: o.text.length },
    ollama: { before: l.before, after: l.after, done_reason: l.last?.done_reason, eval_count: l.last?.eval_count, chars: l.text.length },
    responses: { before: p.before, after: p.after, status: p.final.status, usage: p.final.usage, chars: p.text.length } }));

  if (resultsFile) writeFileSync(resultsFile, JSON.stringify({ openai: o.text, ollama: l.text, responses: p.text }));

  assert.ok(killed, 'the node was never killed');
  assert.equal(killed.in_flight, 3, `streams in flight on ${killed.node} when it was killed: ${killed.in_flight}`);
  // All three were running when the node died, and went on after.
  for (const [name, r] of [['openai-node chat', o], ['ollama-js', l], ['openai-node Responses', p]]) {
    assert.ok(r.after > 0, `${name} read nothing after the kill (${r.before} before): the stream ended first or was not continued`);
  }
  // openai-node: one stream, a finish_reason, usage counting both nodes' tokens.
  assert.equal(o.ids.size, 1, `ids ${[...o.ids]}`);
  assert.equal(o.finish, 'length');
  assert.ok(o.usage && o.usage.completion_tokens === numPredict, JSON.stringify(o.usage));
  assert.equal(o.usage.total_tokens, o.usage.prompt_tokens + o.usage.completion_tokens);
  // ollama-js: the last line is done, cut by num_predict, eval_count counting both nodes' tokens.
  assert.equal(l.last.done, true, JSON.stringify(l.last));
  assert.equal(l.last.done_reason, 'length', JSON.stringify(l.last));
  assert.equal(l.last.eval_count, numPredict, JSON.stringify(l.last));
  // openai-node Responses (Ollama's own Responses API on the first node, the agent's translation
  // on the second): one response, cut by max_output_tokens, its text whole, both nodes' tokens.
  assert.ok(!p.types.has('error') && !p.types.has('response.failed'), [...p.types].join(' '));
  assert.equal(p.final.status, 'incomplete', JSON.stringify(p.final.incomplete_details));
  assert.equal(p.final.output_text, p.text);
  assert.equal(p.final.usage.output_tokens, numPredict, JSON.stringify(p.final.usage));
});
