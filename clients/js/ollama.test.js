// ollama-js (npm "ollama") against the gateway's Ollama-compatible /api/* front, pointed at it
// as OLLAMA_HOST would point it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Ollama } from 'ollama';
import { base, apiKey, chatModel, embedModel, testTimeout, clientTimeout, assertText, assertTokens, assertParts } from './env.js';

const timedFetch = (url, init) => fetch(url, { ...init, signal: init?.signal ?? AbortSignal.timeout(clientTimeout) });
const ollama = new Ollama({ host: base, headers: { Authorization: `Bearer ${apiKey}` }, fetch: timedFetch });
const opts = { timeout: testTimeout };
const withTag = (n) => (n.includes(':') ? n : `${n}:latest`);

describe('ollama-js', () => {
  test('version', opts, async () => {
    const v = await ollama.version();
    assert.match(v.version, /^\d+\.\d+\.\d+/);
  });

  test('list', opts, async () => {
    const { models } = await ollama.list();
    const m = models.find((x) => x.name === withTag(chatModel));
    assert.ok(m, `${chatModel} not in ${models.map((x) => x.name)}`);
    assert.equal(m.model, withTag(chatModel));
    assert.ok(m.size > 0);
    assert.ok(!Number.isNaN(new Date(m.modified_at).getTime()), `modified_at ${m.modified_at}`);
    assert.ok(m.details.family && m.details.parameter_size, JSON.stringify(m.details));
    assert.ok(models.some((x) => x.name === withTag(embedModel)), `${embedModel} not listed`);
  });

  test('chat', opts, async () => {
    const r = await ollama.chat({ model: chatModel, messages: [{ role: 'user', content: 'Say hello' }], options: { num_predict: 8 } });
    assert.equal(r.model, chatModel);
    assert.equal(r.done, true);
    assert.ok(['stop', 'length'].includes(r.done_reason), r.done_reason);
    assert.equal(r.message.role, 'assistant');
    assertText(r.message.content);
    assertTokens(r.eval_count, 8, 'eval_count');
    assert.ok(r.prompt_eval_count > 0 && r.total_duration > 0);
    assert.ok(!Number.isNaN(new Date(r.created_at).getTime()));
  });

  test('chat stream', opts, async () => {
    const stream = await ollama.chat({ model: chatModel, messages: [{ role: 'user', content: 'Count to five' }], stream: true, options: { num_predict: 12 } });
    let text = '', chunks = 0, last = null;
    for await (const part of stream) {
      assert.ok(!last?.done, 'a chunk after the done chunk');
      assert.equal(part.model, chatModel);
      text += part.message.content;
      chunks++;
      last = part;
    }
    assertParts(chunks, 3, 'chunks');
    assertText(text);
    assert.equal(last.done, true);
    assertTokens(last.eval_count, 12, 'eval_count');
  });

  test('generate', opts, async () => {
    const r = await ollama.generate({ model: chatModel, prompt: 'Once upon a time', options: { num_predict: 8 } });
    assert.equal(r.model, chatModel);
    assert.equal(r.done, true);
    assertText(r.response);
    assertTokens(r.eval_count, 8, 'eval_count');
  });

  test('generate stream', opts, async () => {
    const stream = await ollama.generate({ model: chatModel, prompt: 'Once upon a time', stream: true, options: { num_predict: 8 } });
    let text = '', chunks = 0, last = null;
    for await (const part of stream) {
      text += part.response;
      chunks++;
      last = part;
    }
    assertParts(chunks, 2, 'chunks');
    assertText(text);
    assert.equal(last.done, true);
    assertTokens(last.eval_count, 8, 'eval_count');
  });

  test('embed and embeddings', opts, async () => {
    const r = await ollama.embed({ model: embedModel, input: ['hello', 'world'] });
    assert.equal(r.embeddings.length, 2);
    const dim = r.embeddings[0].length;
    assert.ok(dim > 0);
    assert.equal(r.embeddings[1].length, dim);
    assert.notDeepEqual(r.embeddings[0], r.embeddings[1]);
    const one = await ollama.embed({ model: embedModel, input: 'hello' });
    assert.equal(one.embeddings.length, 1);
    assert.equal(one.embeddings[0].length, dim);
    const legacy = await ollama.embeddings({ model: embedModel, prompt: 'hello' });
    assert.equal(legacy.embedding.length, dim);
  });

  test('ps', opts, async () => {
    // The chat above made the model resident; the gateway learns so from a node's heartbeat.
    const deadline = Date.now() + 30_000;
    let running;
    for (;;) {
      ({ models: running } = await ollama.ps());
      if (running.some((m) => m.name === withTag(chatModel)) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const m = running.find((x) => x.name === withTag(chatModel));
    assert.ok(m, `${chatModel} not resident: ${JSON.stringify(running)}`);
    assert.ok(m.size > 0 && m.size_vram >= 0 && m.size_vram <= m.size, JSON.stringify(m)); // 0 VRAM on a CPU-only Ollama
    // Still loaded, so its expiry is ahead (Ollama reports a model kept forever ~292 years out).
    assert.ok(new Date(m.expires_at).getTime() > Date.now(), `expires_at ${m.expires_at}`);
    assert.ok(m.context_length > 0, `context_length ${m.context_length}`);
    assert.match(m.digest, /.+/);
    assert.ok(m.details.family);
  });

  test('show', opts, async () => {
    const s = await ollama.show({ model: chatModel });
    assert.ok(s.details.family && s.details.parameter_size, JSON.stringify(s.details));
    assert.ok(s.capabilities.includes('completion'), `capabilities ${s.capabilities}`);
    // Ollama answers both for its models; for another backend's the agent generates them.
    assert.equal(typeof s.modelfile, 'string', 'no modelfile');
    assert.ok(s.modelfile.includes('FROM '), s.modelfile);
    assert.equal(typeof s.template, 'string', 'no template');
    if (embedModel !== chatModel) {
      const e = await ollama.show({ model: embedModel });
      assert.ok(e.capabilities.includes('embedding'), `capabilities ${e.capabilities}`);
    }
  });

  test('abort a stream, then ask again', { ...opts, skip: process.env.HERD_SKIP_ABORT === '1' && 'the tiny CPU model behind real Ollama can stall after a cancelled stream; covered on simulated nodes' }, async () => {
    const stream = await ollama.chat({ model: chatModel, messages: [{ role: 'user', content: 'Tell me a long story' }], stream: true, options: { num_predict: 200 } });
    let n = 0;
    try {
      for await (const part of stream) {
        if (++n === 1) stream.abort();
        assert.ok(n === 1 || part.message, 'parts already read off the socket are whole');
      }
    } catch (err) {
      assert.equal(err.name, 'AbortError', `${err.name}: ${err.message}`);
    }
    assert.ok(n >= 1);
    // The gateway and the node serve on after the client went away mid-stream.
    const r = await ollama.generate({ model: chatModel, prompt: 'hi', options: { num_predict: 2 } });
    assert.equal(r.done, true);
  });

  test('unknown model: ResponseError 404', opts, async () => {
    for (const call of [
      () => ollama.chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
      () => ollama.generate({ model: 'no-such-model', prompt: 'hi', stream: true }),
      () => ollama.show({ model: 'no-such-model' }),
    ]) {
      await assert.rejects(call(), (err) => {
        assert.equal(err.name, 'ResponseError', `${err.name}: ${err.message}`);
        assert.equal(err.status_code, 404);
        assert.equal(err.error, "model 'no-such-model' not found");
        return true;
      });
    }
  });
});
