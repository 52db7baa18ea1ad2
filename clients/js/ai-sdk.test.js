// The Vercel AI SDK ("ai") against the gateway, with the OpenAI-compatible provider
// (@ai-sdk/openai-compatible, chat completions) and the OpenAI provider (@ai-sdk/openai, whose
// default model is on the Responses API).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateText, streamText, embed, embedMany, tool, Output, stepCountIs } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { createOpenAI } from '@ai-sdk/openai';
import { z } from 'zod';
import {
  base, apiKey, chatModel, embedModel, testTimeout, clientTimeout, assertText, assertTokens, assertParts,
  skipStructured, assertWeatherArgs,
} from './env.js';

const herd = createOpenAICompatible({ name: 'herd', baseURL: `${base}/v1`, apiKey, includeUsage: true });
const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey });
// The same provider told the server takes response_format json_schema (it sends the schema).
const herdStructured = createOpenAICompatible({ name: 'herd', baseURL: `${base}/v1`, apiKey, supportsStructuredOutputs: true });
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

  describe('tools and structured output', { skip: skipStructured }, () => {
    const weatherInput = z.object({ city: z.string().min(1), unit: z.enum(['celsius', 'fahrenheit']), days: z.number().int().min(1).max(7) });
    const prompt = 'What is the weather in Oslo?';

    test('generateText with a tool, toolChoice required', opts, async () => {
      const r = await generateText({
        model: herd(chatModel), prompt, toolChoice: 'required',
        tools: { getWeather: tool({ description: 'The weather in a city', inputSchema: weatherInput }) }, ...call(),
      });
      assert.equal(r.finishReason, 'tool-calls');
      assert.equal(r.toolCalls.length, 1, JSON.stringify(r.toolCalls));
      assert.equal(r.toolCalls[0].toolName, 'getWeather');
      assert.equal(r.toolCalls[0].invalid ?? false, false, JSON.stringify(r.toolCalls[0]));
      assertWeatherArgs(r.toolCalls[0].input);
    });

    test('generateText agent loop: the tool runs, then the model answers (openai provider)', opts, async () => {
      const seen = [];
      const r = await generateText({
        model: openai.chat(chatModel), prompt, stopWhen: stepCountIs(4), maxOutputTokens: 32,
        tools: { getWeather: tool({ description: 'The weather in a city', inputSchema: weatherInput, execute: async (input) => { seen.push(input); return { temperature: 12 }; } }) },
        ...call(),
      });
      assert.equal(seen.length, 1, JSON.stringify(seen));
      assertWeatherArgs(seen[0]);
      assert.equal(r.steps.length, 2);
      assert.equal(r.steps[0].finishReason, 'tool-calls');
      assert.deepEqual(r.steps[0].toolResults.map((t) => t.output), [{ temperature: 12 }]);
      assertText(r.text);
    });

    test('streamText with a named tool: streamed tool input', opts, async () => {
      const r = streamText({
        model: herd(chatModel), prompt, toolChoice: { type: 'tool', toolName: 'getWeather' },
        tools: { getTime: tool({ inputSchema: z.object({}) }), getWeather: tool({ inputSchema: weatherInput }) }, ...call(), onError: () => {},
      });
      let deltas = '', calls = [];
      for await (const part of r.fullStream) {
        if (part.type === 'tool-input-delta') deltas += part.delta;
        if (part.type === 'tool-call') calls.push(part);
        if (part.type === 'error') throw part.error;
      }
      assert.equal(calls.length, 1, JSON.stringify(calls));
      assert.equal(calls[0].toolName, 'getWeather');
      assertWeatherArgs(calls[0].input);
      assert.deepEqual(JSON.parse(deltas), calls[0].input);
      assert.equal(await r.finishReason, 'tool-calls');
    });

    const Recipe = z.object({
      title: z.string(),
      servings: z.number().int().min(1).max(12),
      vegetarian: z.boolean(),
      steps: z.array(z.object({ text: z.string(), minutes: z.number().min(0).max(120) })).min(1),
      difficulty: z.enum(['easy', 'medium', 'hard']),
    });

    test('structured output (Output.object): openai provider and openai-compatible with json_schema', opts, async () => {
      for (const model of [openai.chat(chatModel), herdStructured(chatModel)]) {
        const r = await generateText({ model, prompt: 'A recipe, please.', output: Output.object({ schema: Recipe }), ...call() });
        assert.equal(r.finishReason, 'stop');
        assert.deepEqual(Recipe.parse(r.output), r.output);
      }
    });

    test('streamText structured output: partial objects, then the whole', opts, async () => {
      const r = streamText({ model: openai.chat(chatModel), prompt: 'A recipe, please.', output: Output.object({ schema: Recipe }), ...call(), onError: () => {} });
      let partials = 0;
      for await (const p of r.partialOutputStream) { if (p) partials++; }
      assert.ok(partials >= 2, `${partials} partial objects`);
      const whole = await r.output;
      assert.deepEqual(Recipe.parse(whole), whole);
    });
  });
});
