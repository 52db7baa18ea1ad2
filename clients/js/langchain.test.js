// LangChain JS (@langchain/openai on @langchain/core) against the gateway's /v1 API.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { tool } from '@langchain/core/tools';
import { HumanMessage, ToolMessage } from '@langchain/core/messages';
import { z } from 'zod';
import {
  base, apiKey, chatModel, embedModel, testTimeout, clientTimeout, assertText, assertTokens, assertParts,
  skipStructured, assertWeatherArgs,
} from './env.js';

const configuration = { baseURL: `${base}/v1` };
const common = { apiKey, configuration, timeout: clientTimeout, maxRetries: 0 };
const opts = { timeout: testTimeout };

describe('langchain', () => {
  test('ChatOpenAI invoke', opts, async () => {
    const llm = new ChatOpenAI({ ...common, model: chatModel, maxTokens: 12 });
    const msg = await llm.invoke([['system', 'You are terse.'], ['human', 'Say hello']]);
    assert.equal(typeof msg.content, 'string');
    assertText(msg.content);
    assert.ok(['stop', 'length'].includes(msg.response_metadata.finish_reason), JSON.stringify(msg.response_metadata));
    assert.equal(msg.response_metadata.model_name, chatModel);
    const u = msg.usage_metadata;
    assert.ok(u.input_tokens > 0, JSON.stringify(u));
    assertTokens(u.output_tokens, 12);
    assert.equal(u.total_tokens, u.input_tokens + u.output_tokens);
  });

  test('ChatOpenAI stream', opts, async () => {
    const llm = new ChatOpenAI({ ...common, model: chatModel, maxTokens: 16 });
    let text = '', chunks = 0, full;
    for await (const chunk of await llm.stream('Count to five')) {
      text += chunk.content;
      chunks++;
      full = full ? full.concat(chunk) : chunk;
    }
    assertParts(chunks, 2, 'chunks');
    assertText(text);
    // LangChain asks for stream_options.include_usage; the usage chunk becomes usage_metadata.
    const u = full.usage_metadata;
    assert.ok(u && u.input_tokens > 0, JSON.stringify(u));
    assertTokens(u.output_tokens, 16);
  });

  test('OpenAIEmbeddings embedQuery and embedDocuments', opts, async () => {
    const emb = new OpenAIEmbeddings({ ...common, model: embedModel });
    const q = await emb.embedQuery('hello');
    assert.ok(q.length > 0 && q.every(Number.isFinite));
    const docs = await emb.embedDocuments(['hello', 'world', 'herd']);
    assert.equal(docs.length, 3);
    docs.forEach((d) => assert.equal(d.length, q.length));
    assert.notDeepEqual(docs[0], docs[1]);
    // The same text embeds to the same vector (base64 float32 in both calls).
    docs[0].forEach((v, i) => assert.ok(Math.abs(v - q[i]) < 1e-6));
  });

  describe('responses', () => {

    test('ChatOpenAI useResponsesApi invoke and stream', opts, async () => {
      const llm = new ChatOpenAI({ ...common, model: chatModel, maxTokens: 12, useResponsesApi: true });
      const msg = await llm.invoke('Say hello');
      assertText(msg.text);
      assert.ok(msg.usage_metadata.input_tokens > 0);
      assertTokens(msg.usage_metadata.output_tokens, 12);
      let text = '';
      for await (const chunk of await llm.stream('Count to five')) text += chunk.text;
      assertText(text);
    });
  });

  describe('tools and structured output', { skip: skipStructured }, () => {
    const getWeather = tool(async () => JSON.stringify({ temperature: 12 }), {
      name: 'get_weather', description: 'The weather in a city',
      schema: z.object({ city: z.string().min(1), unit: z.enum(['celsius', 'fahrenheit']), days: z.number().int().min(1).max(7) }),
    });

    test('bindTools invoke: a tool call, then the tool\'s answer answered', opts, async () => {
      const llm = new ChatOpenAI({ ...common, model: chatModel }).bindTools([getWeather], { tool_choice: 'any' });
      const ask = new HumanMessage('What is the weather in Oslo?');
      const msg = await llm.invoke([ask]);
      assert.equal(msg.tool_calls.length, 1, JSON.stringify(msg.tool_calls));
      assert.equal(msg.invalid_tool_calls?.length ?? 0, 0, JSON.stringify(msg.invalid_tool_calls));
      const [tc] = msg.tool_calls;
      assert.equal(tc.name, 'get_weather');
      assertWeatherArgs(tc.args);
      assert.equal(msg.response_metadata.finish_reason, 'tool_calls');
      // Run the tool through LangChain and hand its ToolMessage back: the answer is text.
      const result = await getWeather.invoke(tc);
      assert.ok(result instanceof ToolMessage);
      const plain = new ChatOpenAI({ ...common, model: chatModel, maxTokens: 16 }).bindTools([getWeather]);
      const answer = await plain.invoke([ask, msg, result]);
      assert.equal(answer.tool_calls.length, 0);
      assertText(answer.content);
    });

    test('bindTools stream: tool call chunks add up to the call', opts, async () => {
      const llm = new ChatOpenAI({ ...common, model: chatModel }).bindTools([getWeather], { tool_choice: 'get_weather' });
      let full, chunks = 0;
      for await (const chunk of await llm.stream('What is the weather in Oslo?')) {
        full = full ? full.concat(chunk) : chunk;
        chunks++;
      }
      assert.ok(chunks >= 2, `${chunks} chunks`);
      assert.equal(full.tool_calls.length, 1, JSON.stringify(full.tool_call_chunks));
      assert.equal(full.tool_calls[0].name, 'get_weather');
      assertWeatherArgs(full.tool_calls[0].args);
    });

    const Person = z.object({
      name: z.string(),
      age: z.number().int().min(0).max(120),
      languages: z.array(z.string()),
      address: z.object({ city: z.string(), zip: z.string().max(5) }),
      employed: z.boolean(),
    });

    test('withStructuredOutput: jsonSchema (response_format) and functionCalling (a forced tool)', opts, async () => {
      for (const method of ['jsonSchema', 'functionCalling']) {
        const llm = new ChatOpenAI({ ...common, model: chatModel }).withStructuredOutput(Person, { name: 'person', method });
        const p = await llm.invoke('Describe a person.');
        assert.deepEqual(Person.parse(p), p, method);
      }
    });
  });
});
