// The configuration's one schema (core/config.ts VARIABLES) against the places that copy
// it: the README's table and wrangler.toml's vars and secrets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { VARIABLES, variablesTable } from '../../core/config.ts';
import { workerConfig, type Env } from '../../workers/cloudflare.ts';

const root = new URL('../../', import.meta.url);
const readme = readFileSync(new URL('README.md', root), 'utf8');
const wrangler = readFileSync(new URL('wrangler.toml', root), 'utf8');

/** `[vars]` of wrangler.toml: `KEY = "value"` lines up to the next table. */
function wranglerVars(): Record<string, string> {
  const section = /^\[vars\]\n([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(wrangler)?.[1] ?? '';
  const vars: Record<string, string> = {};
  for (const line of section.split('\n')) {
    const m = /^([A-Z0-9_]+)\s*=\s*"([^"]*)"\s*$/.exec(line.trim());
    if (m) vars[m[1]!] = m[2]!;
    else assert.ok(line.trim() === '' || line.trim().startsWith('#'), `wrangler.toml [vars] line is KEY = "value": ${line}`);
  }
  return vars;
}

test('the README table of variables is the one printed from the schema', () => {
  assert.ok(readme.includes(`${variablesTable()}\n`), 'README.md differs from `npm run -s config:table`: paste its output over the table');
});

test('every variable is named once in the schema, in SCREAMING_SNAKE_CASE', () => {
  const names = VARIABLES.map((v) => v.name);
  assert.equal(new Set(names).size, names.length);
  for (const name of names) assert.match(name, /^[A-Z][A-Z0-9_]*$/);
});

test("wrangler.toml's vars are schema variables a Worker reads, none a secret, and they parse as a Worker's configuration", () => {
  const vars = wranglerVars();
  assert.ok(Object.keys(vars).length > 0);
  for (const name of Object.keys(vars)) {
    const variable = VARIABLES.find((v) => v.name === name);
    assert.ok(variable, `${name} is not in the schema`);
    assert.equal(variable.runtime, 'both', `${name} means nothing to a Worker`);
    assert.ok(!('secret' in variable && variable.secret), `${name} is a secret: wrangler secret put, not [vars]`);
  }
  // Placeholders (`<account-id>`) filled in as a deployer would.
  const filled = Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, v.replace(/<[^>]+>/g, 'example')]));
  const config = workerConfig({ ...filled, INGEST_QUEUE: { sendBatch: async () => {} } } as Env);
  assert.equal(config.blobDelivery, vars.BLOB_DELIVERY);
});

test('wrangler.toml names every secret to set with `wrangler secret put`', () => {
  for (const v of VARIABLES) {
    if ('secret' in v && v.secret && v.runtime === 'both') assert.ok(wrangler.includes(v.name), `${v.name} is not mentioned in wrangler.toml`);
  }
});
