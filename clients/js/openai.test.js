// The official OpenAI Node SDK (npm "openai") against the gateway's /v1 API.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import {
  base, apiKey, chatModel, embedModel, testTimeout, clientTimeout, assertText, assertTokens, assertParts, mayBeEmpty,
  skipStructured, weatherParameters, assertWeatherArgs,
} from './env.js';

const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, timeout: clientTimeout, maxRetries: 0 });
const opts = { timeout: testTimeout };

describe('openai-node', () => {
  test('models.list and models.retrieve', opts, async () => {
    const ids = [];
    for await (const m of client.models.list()) {
      assert.equal(m.object, 'model');
      assert.equal(typeof m.created, 'number');
      assert.equal(typeof m.owned_by, 'string');
      ids.push(m.id);
    }
    assert.ok(ids.includes(chatModel), `${chatModel} not in ${ids}`);
    assert.ok(ids.includes(embedModel) || ids.includes(`${embedModel}:latest`), `${embedModel} not in ${ids}`);
    const m = await client.models.retrieve(chatModel);
    assert.equal(m.id, chatModel);
  });

  test('chat.completions.create', opts, async () => {
    const { data: r, response } = await client.chat.completions
      .create({ model: chatModel, messages: [{ role: 'user', content: 'Say hello' }], max_tokens: 12 })
      .withResponse();
    assert.equal(r.object, 'chat.completion');
    assert.match(r.id, /.+/);
    assert.equal(r.model, chatModel);
    assert.equal(r.choices.length, 1);
    const [c] = r.choices;
    assert.equal(c.index, 0);
    assert.equal(c.message.role, 'assistant');
    assertText(c.message.content);
    assert.ok(['stop', 'length'].includes(c.finish_reason), c.finish_reason);
    assert.ok(r.usage.prompt_tokens > 0);
    assertTokens(r.usage.completion_tokens, 12, 'completion_tokens');
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    assert.ok(response.headers.get('x-herd-node'), 'no X-Herd-Node header');
  });

  test('chat.completions.create stream with include_usage', opts, async () => {
    const stream = await client.chat.completions.create({
      model: chatModel, messages: [{ role: 'user', content: 'Count to five' }], max_tokens: 16,
      stream: true, stream_options: { include_usage: true },
    });
    let text = '', chunks = 0, finish = null, usage = null, afterUsage = 0;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (usage) afterUsage++;
      if (chunk.usage) {
        usage = chunk.usage;
        assert.deepEqual(chunk.choices, [], 'the usage chunk has no choices');
        continue;
      }
      assert.equal(chunk.usage ?? null, null);
      chunks++;
      text += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assertParts(chunks, 2, 'content chunks');
    assertText(text);
    assert.ok(['stop', 'length'].includes(finish), `finish_reason ${finish}`);
    assert.ok(usage, 'no usage chunk');
    assert.equal(afterUsage, 0, 'chunks after the usage chunk');
    assert.ok(usage.prompt_tokens > 0);
    assertTokens(usage.completion_tokens, 16, 'completion_tokens');
  });

  test('chat.completions.stream helper (finalChatCompletion)', opts, async () => {
    const runner = client.chat.completions.stream({
      model: chatModel, messages: [{ role: 'user', content: 'Say hi' }], max_tokens: 8,
      stream_options: { include_usage: true },
    });
    let deltas = '';
    runner.on('content', (d) => { deltas += d; });
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.role, 'assistant');
    // The content deltas joined are the final message (null when a tiny real model said nothing).
    assert.equal(final.choices[0].message.content ?? '', deltas);
    assert.ok(['stop', 'length'].includes(final.choices[0].finish_reason));
  });

  test('completions.create', opts, async () => {
    const r = await client.completions.create({ model: chatModel, prompt: 'Once upon a time', max_tokens: 10 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices.length, 1);
    assertText(r.choices[0].text);
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
    assertTokens(r.usage.completion_tokens, 10, 'completion_tokens');
  });

  test('completions.create stream', opts, async () => {
    const stream = await client.completions.create({ model: chatModel, prompt: 'Once upon a time', max_tokens: 10, stream: true });
    let text = '', chunks = 0;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'text_completion');
      text += chunk.choices[0]?.text ?? '';
      chunks++;
    }
    assertParts(chunks, 2, 'chunks');
    assertText(text);
  });

  test('embeddings.create (the SDK asks for base64 and decodes it)', opts, async () => {
    const r = await client.embeddings.create({ model: embedModel, input: ['hello', 'world'] });
    assert.equal(r.object, 'list');
    assert.equal(r.data.length, 2);
    const dim = r.data[0].embedding.length;
    assert.ok(dim > 0);
    r.data.forEach((d, i) => {
      assert.equal(d.object, 'embedding');
      assert.equal(d.index, i);
      assert.equal(d.embedding.length, dim);
      assert.ok(d.embedding.every(Number.isFinite));
    });
    assert.notDeepEqual(r.data[0].embedding, r.data[1].embedding);
    assert.ok(r.usage.prompt_tokens > 0);
  });

  test('embeddings.create encoding_format float', opts, async () => {
    const a = await client.embeddings.create({ model: embedModel, input: 'hello', encoding_format: 'float' });
    const b = await client.embeddings.create({ model: embedModel, input: 'hello' });
    assert.equal(a.data.length, 1);
    assert.equal(a.data[0].embedding.length, b.data[0].embedding.length);
    // base64 carries float32; the float answer rounded to float32 must be the same vector.
    a.data[0].embedding.forEach((v, i) => assert.equal(Math.fround(v), b.data[0].embedding[i]));
  });

  test('files.create, batches.create/retrieve until completed, files.content', { timeout: 120_000 }, async () => {
    const lines = [0, 1, 2].map((i) => JSON.stringify({
      custom_id: `js-${i}`, method: 'POST', url: '/v1/chat/completions',
      body: { model: chatModel, max_tokens: 8, messages: [{ role: 'user', content: `prompt ${i}` }] },
    }));
    const file = await client.files.create({ file: await toFile(Buffer.from(lines.join('\n') + '\n'), 'js-batch.jsonl'), purpose: 'batch' });
    assert.match(file.id, /.+/);
    assert.equal(file.object, 'file');
    assert.equal(file.purpose, 'batch');
    assert.equal(file.filename, 'js-batch.jsonl');
    assert.ok(file.bytes > 0);
    const got = await client.files.retrieve(file.id);
    assert.equal(got.id, file.id);

    let b = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    assert.equal(b.object, 'batch');
    assert.equal(b.input_file_id, file.id);
    assert.equal(b.endpoint, '/v1/chat/completions');
    const deadline = Date.now() + 100_000;
    while (!['completed', 'failed', 'expired', 'cancelled'].includes(b.status)) {
      assert.ok(Date.now() < deadline, `batch still ${b.status}`);
      await new Promise((r) => setTimeout(r, 250));
      b = await client.batches.retrieve(b.id);
    }
    assert.equal(b.status, 'completed');
    assert.deepEqual(b.request_counts, { total: 3, completed: 3, failed: 0 });
    assert.ok(b.output_file_id);

    const listed = [];
    for await (const x of client.batches.list({ limit: 10 })) listed.push(x.id);
    assert.ok(listed.includes(b.id), `batch ${b.id} not in batches.list`);

    const content = await (await client.files.content(b.output_file_id)).text();
    const out = content.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(out.map((l) => l.custom_id).sort(), ['js-0', 'js-1', 'js-2']);
    for (const l of out) {
      assert.equal(l.error ?? null, null);
      assert.equal(l.response.status_code, 200);
      assert.equal(l.response.body.object, 'chat.completion');
      assert.equal(typeof l.response.body.choices[0].message.content, 'string');
      assert.ok(l.response.body.usage.completion_tokens <= 8);
    }

    const del = await client.files.delete(file.id);
    assert.deepEqual({ id: del.id, deleted: del.deleted }, { id: file.id, deleted: true });
    await assert.rejects(client.files.retrieve(file.id), (err) => err instanceof OpenAI.NotFoundError);
  });

  test('unknown model: NotFoundError, 404, model_not_found', opts, async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
      (err) => {
        assert.ok(err instanceof OpenAI.NotFoundError, `${err?.constructor?.name}: ${err}`);
        assert.equal(err.status, 404);
        assert.equal(err.code, 'model_not_found');
        assert.equal(typeof err.error?.message, 'string');
        assert.ok(err.message.includes('no-such-model'), err.message);
        return true;
      });
  });

  test('bad request: BadRequestError, 400, with param', opts, async () => {
    await assert.rejects(client.chat.completions.create({ model: chatModel, messages: [] }), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.type, 'invalid_request_error');
      assert.ok([null, 'messages'].includes(err.param ?? null), `param ${err.param}`); // Ollama leaves param null
      assert.match(err.message, /messages/);
      return true;
    });
  });

  test('wrong API key: AuthenticationError, 401', opts, async () => {
    const bad = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-wrong-key-0000000000', timeout: clientTimeout, maxRetries: 0 });
    await assert.rejects(bad.models.list(), (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, `${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 401);
      assert.equal(err.code, 'invalid_api_key');
      return true;
    });
  });

  describe('responses', () => {

    test('responses.create', opts, async () => {
      // No max_output_tokens: the answer ends by itself and the response is "completed".
      const r = await client.responses.create({ model: chatModel, input: 'Say hello', instructions: 'Be brief.' });
      assert.equal(r.object, 'response');
      assert.match(r.id, /.+/);
      assert.equal(r.status, 'completed');
      assert.equal(r.incomplete_details ?? null, null);
      assert.equal(r.error ?? null, null);
      assert.equal(r.model, chatModel);
      assertText(r.output_text);
      const msg = r.output.find((o) => o.type === 'message');
      assert.equal(msg.role, 'assistant');
      assert.equal(msg.status, 'completed');
      assert.equal(msg.content[0].type, 'output_text');
      assert.equal(msg.content[0].text, r.output_text);
      assert.ok(r.usage.input_tokens > 0, JSON.stringify(r.usage));
      assertTokens(r.usage.output_tokens);
      assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
    });

    test('responses.create with max_output_tokens', opts, async () => {
      // A cut answer is "incomplete" with the reason, as OpenAI reports it.
      const r = await client.responses.create({ model: chatModel, input: 'Tell me a long story', max_output_tokens: 16 });
      assert.ok(['completed', 'incomplete'].includes(r.status), r.status);
      if (r.status === 'incomplete') assert.equal(r.incomplete_details?.reason, 'max_output_tokens');
      assertText(r.output_text);
      assertTokens(r.usage.output_tokens, 16);
    });

    test('responses.create stream', opts, async () => {
      const stream = await client.responses.create({ model: chatModel, input: 'Count to five', stream: true });
      let deltas = '', completed = null, created = false, lastSeq = -1, last = null, done = null;
      for await (const ev of stream) {
        assert.ok(ev.sequence_number > lastSeq, `sequence_number ${ev.sequence_number} after ${lastSeq}`);
        lastSeq = ev.sequence_number;
        last = ev.type;
        if (ev.type === 'response.created') created = true;
        if (ev.type === 'response.output_text.delta') deltas += ev.delta;
        if (ev.type === 'response.output_text.done') done = ev.text;
        if (ev.type === 'response.completed') completed = ev.response;
      }
      assert.ok(created, 'no response.created event');
      assertText(deltas, 'the output_text deltas');
      assert.equal(last, 'response.completed', `last event ${last}`);
      assert.equal(completed.status, 'completed');
      // A reply the tiny real model ended at once has no text part to finish (Ollama's own stream).
      if (!(mayBeEmpty && deltas === '')) {
        assert.equal(done, deltas, 'response.output_text.done text is not the deltas joined');
        assert.equal(completed.output.find((o) => o.type === 'message').content[0].text, deltas);
      }
      assert.ok(completed.usage.input_tokens > 0, JSON.stringify(completed.usage));
      assertTokens(completed.usage.output_tokens);
    });

    test('responses.create stream with max_output_tokens', opts, async () => {
      const stream = await client.responses.create({ model: chatModel, input: 'Tell me a long story', max_output_tokens: 16, stream: true });
      let final = null;
      for await (const ev of stream) {
        if (ev.type === 'response.completed' || ev.type === 'response.incomplete') final = ev;
      }
      assert.ok(final, 'neither response.completed nor response.incomplete');
      assert.equal(final.response.status, final.type.slice('response.'.length));
      if (final.type === 'response.incomplete') assert.equal(final.response.incomplete_details?.reason, 'max_output_tokens');
      assertTokens(final.response.usage.output_tokens, 16);
    });

    test('responses.stream helper (finalResponse)', opts, async () => {
      const stream = client.responses.stream({ model: chatModel, input: 'Say hi' });
      let deltas = '';
      stream.on('response.output_text.delta', (ev) => { deltas += ev.delta; });
      const final = await stream.finalResponse();
      assert.equal(final.status, 'completed');
      assert.equal(final.output_text, deltas);
    });

    test('responses.create unknown model: NotFoundError', opts, async () => {
      await assert.rejects(client.responses.create({ model: 'no-such-model', input: 'hi' }), (err) => {
        assert.ok(err instanceof OpenAI.NotFoundError, `${err?.constructor?.name}: ${err}`);
        assert.equal(err.code, 'model_not_found');
        return true;
      });
    });
  });

  describe('tools and structured output', { skip: skipStructured }, () => {
    const weatherTool = { type: 'function', function: { name: 'get_weather', description: 'The weather in a city', parameters: weatherParameters, strict: true } };
    const ask = [{ role: 'user', content: 'What is the weather in Oslo?' }];

    test('chat.completions.create: tool_choice required, then the tool result answered', opts, async () => {
      const r = await client.chat.completions.create({ model: chatModel, messages: ask, tools: [weatherTool], tool_choice: 'required' });
      const [c] = r.choices;
      assert.equal(c.finish_reason, 'tool_calls');
      assert.equal(c.message.content, null);
      assert.equal(c.message.tool_calls.length, 1);
      const call = c.message.tool_calls[0];
      assert.equal(call.type, 'function');
      assert.equal(call.function.name, 'get_weather');
      assert.match(call.id, /^call_/);
      assertWeatherArgs(JSON.parse(call.function.arguments));
      // The conversation goes on with the tool's result: the model answers in text.
      const r2 = await client.chat.completions.create({
        model: chatModel, tools: [weatherTool], max_tokens: 16,
        messages: [...ask, c.message, { role: 'tool', tool_call_id: call.id, content: '{"temperature":12}' }],
      });
      assert.equal(r2.choices[0].message.tool_calls, undefined);
      assertText(r2.choices[0].message.content);
    });

    test('chat.completions.create stream: a named function\'s call in OpenAI\'s pieces', opts, async () => {
      const noise = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } };
      const stream = await client.chat.completions.create({
        model: chatModel, messages: ask, tools: [noise, weatherTool], stream: true,
        tool_choice: { type: 'function', function: { name: 'get_weather' } },
      });
      let head = null, args = '', deltas = 0, finish = null;
      for await (const chunk of stream) {
        const ch = chunk.choices[0];
        if (!ch) continue;
        finish = ch.finish_reason ?? finish;
        for (const tc of ch.delta.tool_calls ?? []) {
          assert.equal(tc.index, 0);
          if (tc.id) {
            assert.equal(head, null, 'a second call head');
            head = tc;
          }
          args += tc.function?.arguments ?? '';
          deltas++;
        }
      }
      assert.ok(head, 'no tool call head');
      assert.match(head.id, /^call_/);
      assert.equal(head.type, 'function');
      assert.equal(head.function.name, 'get_weather');
      assert.ok(deltas >= 2, `${deltas} tool call deltas`);
      assert.equal(finish, 'tool_calls');
      assertWeatherArgs(JSON.parse(args));
    });

    test('chat.completions.runTools: the SDK\'s agent loop calls the tool, then gets an answer', opts, async () => {
      const calls = [];
      const runner = client.chat.completions.runTools({
        model: chatModel, messages: ask,
        tools: [{ type: 'function', function: { name: 'get_weather', parameters: weatherParameters, parse: JSON.parse, function: (args) => { calls.push(args); return { temperature: 12 }; } } }],
      });
      const content = await runner.finalContent();
      assert.equal(calls.length, 1, JSON.stringify(calls));
      assertWeatherArgs(calls[0]);
      assertText(content);
    });

    const Event = z.object({
      name: z.string(),
      priority: z.enum(['low', 'high']),
      attendees: z.number().int().min(1).max(50),
      participants: z.array(z.string()),
      location: z.object({ city: z.string(), indoor: z.boolean() }),
      note: z.string().nullable(),
    });

    test('chat.completions.parse with zodResponseFormat (json_schema)', opts, async () => {
      const r = await client.chat.completions.parse({
        model: chatModel, messages: [{ role: 'user', content: 'Plan an event.' }], response_format: zodResponseFormat(Event, 'event'),
      });
      const [c] = r.choices;
      assert.equal(c.finish_reason, 'stop');
      assert.ok(c.message.parsed, c.message.content);
      assert.deepEqual(Event.parse(c.message.parsed), c.message.parsed);
    });

    test('chat.completions.create stream with response_format json_schema and json_object', opts, async () => {
      const schema = { type: 'object', properties: { answer: { type: 'string' }, score: { type: 'number', minimum: 0, maximum: 1 } }, required: ['answer', 'score'], additionalProperties: false };
      for (const response_format of [{ type: 'json_schema', json_schema: { name: 'scored', strict: true, schema } }, { type: 'json_object' }]) {
        const stream = await client.chat.completions.create({ model: chatModel, messages: [{ role: 'user', content: 'Answer in JSON.' }], response_format, stream: true });
        let text = '';
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
        const v = JSON.parse(text);
        assert.equal(typeof v, 'object', text);
        if (response_format.type === 'json_schema') {
          assert.equal(typeof v.answer, 'string', text);
          assert.ok(v.score >= 0 && v.score <= 1, text);
        }
      }
    });

    test('responses.create with a function tool', opts, async () => {
      const r = await client.responses.create({
        model: chatModel, input: 'What is the weather in Oslo?', tool_choice: 'required',
        tools: [{ type: 'function', name: 'get_weather', parameters: weatherParameters, strict: true }],
      });
      const calls = r.output.filter((it) => it.type === 'function_call');
      assert.equal(calls.length, 1, JSON.stringify(r.output));
      assert.equal(calls[0].name, 'get_weather');
      assert.ok(calls[0].call_id);
      assertWeatherArgs(JSON.parse(calls[0].arguments));
    });

    test('bad parameters: BadRequestError naming the param', opts, async () => {
      for (const [extra, param] of [[{ temperature: 'hot' }, 'temperature'], [{ temperature: 99 }, 'temperature'], [{ top_p: 'x' }, 'top_p'], [{ stop: 5 }, 'stop'], [{ tools: 'x' }, 'tools']]) {
        await assert.rejects(client.chat.completions.create({ model: chatModel, messages: ask, ...extra }), (err) => {
          assert.ok(err instanceof OpenAI.BadRequestError, `${JSON.stringify(extra)}: ${err?.constructor?.name}: ${err}`);
          assert.equal(err.param, param, `${JSON.stringify(extra)}: ${err.message}`);
          return true;
        });
      }
    });
  });
});
