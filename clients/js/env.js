// Where the suite finds the gateway: cmd/herd's TestNodeClients starts a gateway in front of
// simulated nodes and passes its address, key and model names in the environment.
import assert from 'node:assert/strict';

function need(name) {
  const v = process.env[name];
  assert.ok(v, `${name} is not set: run this suite through cmd/herd's TestNodeClients (or set it by hand)`);
  return v;
}

/** The gateway's base URL, e.g. http://127.0.0.1:PORT (no trailing slash). */
export const base = need('HERD_GATEWAY_URL').replace(/\/+$/, '');
/** An API key the gateway accepts. */
export const apiKey = need('HERD_API_KEY');
/** A chat model every node serves. */
export const chatModel = need('HERD_CHAT_MODEL');
/** An embedding model every node serves. */
export const embedModel = need('HERD_EMBED_MODEL');

/** The bound on every single test; the clients' own timeouts are set below it. */
export const testTimeout = 60_000;
export const clientTimeout = 45_000;

/**
 * Whether a reply may be empty: the tiny model the real-Ollama run generates ends a reply by
 * itself about once in 25 tokens, so now and then right away. The simulator never does.
 */
export const mayBeEmpty = process.env.HERD_REPLIES_MAY_BE_EMPTY === '1';

/** Asserts s is generated text: a string, and not empty unless replies may be empty. */
export function assertText(s, what = 'text') {
  assert.equal(typeof s, 'string', `${what} is ${typeof s}`);
  if (!mayBeEmpty) assert.ok(s.length > 0, `${what} is empty`);
}

/** Asserts a generated-token count: at most max, and above 0 unless replies may be empty. */
export function assertTokens(n, max = Infinity, what = 'output tokens') {
  assert.equal(typeof n, 'number', `${what} is ${n}`);
  assert.ok(n <= max, `${what} ${n} > ${max}`);
  assert.ok(mayBeEmpty ? n >= 0 : n > 0, `${what} ${n}`);
}

/** Asserts at least min streamed parts (at least 1 where replies may be empty). */
export function assertParts(n, min, what = 'parts') {
  assert.ok(n >= (mayBeEmpty ? 1 : min), `${n} ${what}`);
}

/**
 * Why the tool-call and structured-output checks are skipped, or false where they run. The
 * simulated node answers tools, tool_choice and response_format for real; the tiny generated model
 * behind the real-Ollama run has no tool template and chooses nothing, so that run sets
 * HERD_SKIP_STRUCTURED=1.
 */
export const skipStructured = process.env.HERD_SKIP_STRUCTURED === '1' &&
  'the tiny generated model behind real Ollama cannot call tools or fill a schema; checked on simulated nodes';

/** The JSON Schema of the weather tool the tool-call checks declare (strict-mode shape). */
export const weatherParameters = {
  type: 'object',
  properties: {
    city: { type: 'string', minLength: 1, description: 'City name' },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
    days: { type: 'integer', minimum: 1, maximum: 7 },
  },
  required: ['city', 'unit', 'days'],
  additionalProperties: false,
};

/** Asserts a weather tool call's arguments fit weatherParameters. */
export function assertWeatherArgs(args) {
  assert.equal(typeof args, 'object', JSON.stringify(args));
  assert.deepEqual(Object.keys(args).sort(), ['city', 'days', 'unit'], JSON.stringify(args));
  assert.ok(typeof args.city === 'string' && args.city.length > 0, JSON.stringify(args));
  assert.ok(['celsius', 'fahrenheit'].includes(args.unit), JSON.stringify(args));
  assert.ok(Number.isInteger(args.days) && args.days >= 1 && args.days <= 7, JSON.stringify(args));
}
