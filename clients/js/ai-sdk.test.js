// The Vercel AI SDK ("ai") against the gateway, with the OpenAI-compatible provider
// (@ai-sdk/openai-compatible, chat completions) and the OpenAI provider (@ai-sdk/openai, whose
// default model is on the Responses API).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateText, streamText, embed, embedMany } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { createOpenAI } from '@ai-sdk/openai';
import { base, apiKey, chatModel, embedModel, testTimeout, clientTimeout, assertText, assertTokens, assertParts } from './env.js';

const herd = createOpenAICompatible({ name: 'herd', baseURL: `${base}/v1`, apiKey, includeUsage: true });
const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey });
const opts = { timeout: testTimeout };
const call = () => ({ maxRetries: 0, abortSignal: AbortSignal.timeout(clientTimeout) });

async function checkGenerate(model, max) {
  const r = await generateText({ model, prompt: 'Say hello', maxOutputTokens: max, ...call() });
  assertText(r.text);
  assert.ok(['stop', 'length'].includes(r.finishReason), r.finishReason);
  assert.ok(r.usage.inputTokens > 0, JSON.stringify(r.usage));
  assertTokens(r.usage.outputTokens, max);
  assert.equal(r.response.modelId, chatModel);
}

async function checkStream(model, max) {
  const r = streamText({ model, prompt: 'Count to five', maxOutputTokens: max, ...call(), onError: () => {} });
  let text = '', parts = 0;
  for await (const delta of r.textStream) { text += delta; parts++; }
  assertParts(parts, 2, 'text parts');
  assert.equal(text, await r.text);
  assert.ok(['stop', 'length'].includes(await r.finishReason));
  const u = await r.usage;
  assert.ok(u.inputTokens > 0, JSON.stringify(u));
  assertTokens(u.outputTokens, max);
}

describe('vercel ai', () => {
  test('generateText (openai-compatible provider)', opts, () => checkGenerate(herd(chatModel), 12));
  test('streamText (openai-compatible provider)', opts, () => checkStream(herd(chatModel), 16));
  test('generateText (openai provider, chat completions)', opts, () => checkGenerate(openai.chat(chatModel), 12));
  test('streamText (openai provider, chat completions)', opts, () => checkStream(openai.chat(chatModel), 16));

  test('embed and embedMany (openai-compatible provider)', opts, async () => {
    const model = herd.embeddingModel(embedModel);
    const one = await embed({ model, value: 'hello', ...call() });
    assert.ok(one.embedding.length > 0);
    const many = await embedMany({ model, values: ['hello', 'world'], ...call() });
    assert.equal(many.embeddings.length, 2);
    assert.equal(many.embeddings[0].length, one.embedding.length);
    assert.notDeepEqual(many.embeddings[0], many.embeddings[1]);
  });

  test('unknown model: APICallError 404', opts, async () => {
    await assert.rejects(generateText({ model: herd('no-such-model'), prompt: 'hi', ...call() }), (err) => {
      assert.equal(err.name, 'AI_APICallError', `${err.name}: ${err.message}`);
      assert.equal(err.statusCode, 404);
      assert.equal(err.isRetryable, false);
      assert.ok(err.message.includes('no-such-model'), err.message);
      return true;
    });
  });

  describe('responses (the openai provider\'s default model)', () => {
    test('generateText', opts, async () => {
      await checkGenerate(openai(chatModel), 16);
    });
    test('streamText', opts, async () => {
      await checkStream(openai(chatModel), 16);
    });
  });
});
