// The auth primitives of issue 13: password hashes, signed tokens, credential and scope
// parsers and the upstream's WWW-Authenticate parser (fuzzed: untrusted input never
// throws), repository patterns and rules, the cold-work limit, auth configuration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { hashPassword, parsePasswordHash, verifyPassword, PBKDF2_ITERATIONS, constantTimeEqual } from '../../core/auth/password.ts';
import { signToken, verifyToken, type SigningKey, type TokenClaims } from '../../core/auth/token.ts';
import { parseAuthorization, parseScope } from '../../core/auth/credentials.ts';
import { matchesPattern, patternProblem } from '../../core/auth/patterns.ts';
import { allows, anonymous, defaultRules, parseRules, type Identity, type Rule } from '../../core/auth/rules.ts';
import { MemoryRateLimiter } from '../../core/auth/rate-limit.ts';
import { Access, newStaticToken } from '../../core/auth/access.ts';
import { parseChallenge } from '../../core/adapters/http-upstream.ts';
import { parseConfig, ConfigError } from '../../core/config.ts';

test('a password hash verifies its password only, and says what is wrong with a malformed one', async () => {
  const stored = await hashPassword('correct horse');
  assert.match(stored, new RegExp(`^pbkdf2-sha256\\$${PBKDF2_ITERATIONS}\\$[A-Za-z0-9_-]{22}\\$[A-Za-z0-9_-]{43}$`));
  assert.equal(await verifyPassword('correct horse', stored), true);
  assert.equal(await verifyPassword('correct horsf', stored), false);
  assert.equal(await verifyPassword('', stored), false);
  assert.notEqual(await hashPassword('correct horse'), stored, 'a fresh salt each time');
  assert.match(parsePasswordHash('plain') as string, /pullthrough hash-password/);
  assert.match(parsePasswordHash(stored.replace(`$${PBKDF2_ITERATIONS}$`, '$200000$')) as string, /between 10000 and 100000/);
  assert.match(parsePasswordHash(stored.replace(/\$[^$]+$/, '$AAAA')) as string, /32 bytes/);
  assert.equal(await verifyPassword('correct horse', 'pbkdf2-sha256$x$y$z'), false);
  assert.equal(constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2, 0])), false);
});

const key = (id: string): SigningKey => ({ id, secret: randomBytes(32) });
const claims = (over: Partial<TokenClaims> = {}): TokenClaims => ({
  sub: 'alice',
  aud: 'pullthrough',
  iat: 1000,
  exp: 1300,
  access: [{ type: 'repository', name: 'library/alpine', actions: ['pull'] }],
  ...over,
});

test('tokens verify with their key until they expire; rotation keeps old keys verifying; tampering is refused', async () => {
  const [k1, k2] = [key('k1'), key('k2')];
  const token = await signToken(claims(), k1);
  assert.deepEqual(await verifyToken(token, [k1], 'pullthrough', 1299), { ok: true, claims: claims() });
  assert.deepEqual(await verifyToken(token, [k2, k1], 'pullthrough', 1000), { ok: true, claims: claims() }, 'a rotated-out signer still verifies');
  assert.deepEqual(await verifyToken(token, [k1], 'pullthrough', 1300), { ok: false, reason: 'expired' });
  assert.deepEqual(await verifyToken(token, [k2], 'pullthrough', 1000), { ok: false, reason: 'unknown key' });
  assert.deepEqual(await verifyToken(token, [{ id: 'k1', secret: randomBytes(32) }], 'pullthrough', 1000), { ok: false, reason: 'bad signature' });
  assert.deepEqual(await verifyToken(token, [k1], 'elsewhere', 1000), { ok: false, reason: 'wrong audience' });
  // Another repository in the payload, the signature kept: refused.
  const [h, , s] = token.split('.');
  const forged = `${h}.${Buffer.from(JSON.stringify(claims({ access: [{ type: 'repository', name: 'acme/private', actions: ['pull'] }] }))).toString('base64url')}.${s}`;
  assert.deepEqual(await verifyToken(forged, [k1], 'pullthrough', 1000), { ok: false, reason: 'bad signature' });
  const none = `${Buffer.from(JSON.stringify({ alg: 'none', kid: 'k1' })).toString('base64url')}.${token.split('.')[1]}.`;
  assert.deepEqual(await verifyToken(none, [k1], 'pullthrough', 1000), { ok: false, reason: 'malformed' });
  for (const junk of ['', 'a.b', 'a.b.c', '...', `${h}.%%%.${s}`]) assert.equal((await verifyToken(junk, [k1], 'pullthrough', 1000)).ok, false, junk);
});

test('Authorization parsing: Basic and Bearer, anything else undefined; random input never throws', () => {
  assert.deepEqual(parseAuthorization(`Basic ${btoa('alice:pa:ss')}`), { scheme: 'basic', user: 'alice', password: 'pa:ss' });
  assert.deepEqual(parseAuthorization('bearer abc.def.ghi'), { scheme: 'bearer', token: 'abc.def.ghi' });
  for (const bad of [undefined, null, '', 'Basic', 'Basic !!!', `Basic ${btoa('nocolon')}`, `Basic ${btoa(':nouser')}`, 'Digest x', 'Bearer a b', `Basic ${btoa('a:b')}=`]) {
    assert.equal(parseAuthorization(bad), undefined, String(bad));
  }
  const alphabet = 'Basic Bearer :=+/ \t"\\,abcXYZ019-_.%\u00e9\u0000';
  for (let i = 0; i < 5000; i++) {
    const n = Math.floor(Math.random() * 40);
    let s = '';
    for (let j = 0; j < n; j++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
    assert.doesNotThrow(() => parseAuthorization(s));
    assert.doesNotThrow(() => parseScope(s));
  }
  for (let i = 0; i < 500; i++) {
    const user = randomBytes(1 + (i % 12)).toString('base64url').replaceAll(':', '');
    const password = randomBytes(i % 30).toString('latin1');
    const header = `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
    assert.deepEqual(parseAuthorization(header), { scheme: 'basic', user, password });
  }
});

test('token request scopes', () => {
  assert.deepEqual(parseScope('repository:library/alpine:pull'), { name: 'library/alpine', actions: ['pull'] });
  assert.deepEqual(parseScope('repository:ghcr.io/acme/app:pull,push'), { name: 'ghcr.io/acme/app', actions: ['pull', 'push'] });
  assert.deepEqual(parseScope('repository(plugin):x/y:pull'), { name: 'x/y', actions: ['pull'] });
  for (const bad of ['registry:catalog:*', 'repository:alpine', 'repository::pull', 'repository:a b:pull']) assert.equal(parseScope(bad), undefined, bad);
});

test('repository patterns: * is one segment, ** any depth, per upstream host', () => {
  assert.equal(matchesPattern('docker.io/library/*', 'docker.io', 'library/alpine'), true);
  assert.equal(matchesPattern('docker.io/library/*', 'docker.io', 'library/a/b'), false);
  assert.equal(matchesPattern('docker.io/library/*', 'ghcr.io', 'library/alpine'), false);
  assert.equal(matchesPattern('ghcr.io/acme/**', 'ghcr.io', 'acme/app/sub'), true);
  assert.equal(matchesPattern('ghcr.io/acme/**', 'ghcr.io', 'acme'), false);
  assert.equal(matchesPattern('ghcr.io/acme/app', 'ghcr.io', 'acme/app'), true);
  assert.equal(matchesPattern('ghcr.io/acme/app', 'ghcr.io', 'acme/app2'), false);
  assert.equal(patternProblem('docker.io/library/*'), undefined);
  assert.match(patternProblem('library/*')!, /upstream host/);
  assert.match(patternProblem('docker.io')!, /after the host/);
  assert.match(patternProblem('docker.io/**/x')!, /last segment/);
  assert.match(patternProblem('docker.io/Acme')!, /not a repository path segment/);
});

test('WWW-Authenticate parsing (the upstream client reads challenges): quoted and bare values, escapes; random input never throws', () => {
  assert.deepEqual(parseChallenge('Bearer realm="https://a/token",service="reg",scope="repository:x/y:pull",error="insufficient_scope"'), {
    scheme: 'bearer',
    params: { realm: 'https://a/token', service: 'reg', scope: 'repository:x/y:pull', error: 'insufficient_scope' },
  });
  assert.deepEqual(parseChallenge('Bearer realm=bare,Service="a\\"b"'), { scheme: 'bearer', params: { realm: 'bare', service: 'a"b' } });
  const alphabet = 'Bearer Basic realm= service scope,"\\ \t=:/abc019\u00e9\u0000';
  for (let i = 0; i < 5000; i++) {
    let s = '';
    for (let j = Math.floor(Math.random() * 60); j > 0; j--) s += alphabet[Math.floor(Math.random() * alphabet.length)];
    assert.doesNotThrow(() => parseChallenge(s));
  }
  // Values with quotes and backslashes, escaped as RFC 9110 says, come back as they were.
  for (let i = 0; i < 500; i++) {
    const value = randomBytes(i % 24).toString('latin1').replace(/[\u0000-\u001f\u007f-\uffff]/g, '').concat(i % 2 ? '"\\' : '');
    const parsed = parseChallenge(`Bearer realm="${value.replace(/["\\]/g, '\\$&')}",service="s"`);
    assert.deepEqual(parsed, { scheme: 'bearer', params: { realm: value, service: 's' } });
  }
  // Our own 401 challenge parses back to what clients need.
  assert.deepEqual(parseChallenge('Bearer realm="http://127.0.0.1:5000/token",service="pullthrough",scope="repository:docker.io/library/small:pull"')!.params, {
    realm: 'http://127.0.0.1:5000/token',
    service: 'pullthrough',
    scope: 'repository:docker.io/library/small:pull',
  });
});

test('rules: the syntax, who they name, and what they grant', () => {
  const names = new Set(['alice', 'ci']);
  const rules = parseRules('pull docker.io/library/* to anonymous\npull ghcr.io/acme/** to alice, ci; warm docker.io/** to ci\n# a comment\nadmin to alice', names) as Rule[];
  assert.equal(rules.length, 4);
  const alice: Identity = { kind: 'user', name: 'alice' };
  const ci: Identity = { kind: 'token', name: 'ci' };
  assert.equal(allows(rules, anonymous, 'pull', { upstream: 'docker.io', name: 'library/alpine' }), true);
  assert.equal(allows(rules, anonymous, 'pull', { upstream: 'docker.io', name: 'acme/app' }), false);
  assert.equal(allows(rules, anonymous, 'pull', { upstream: 'ghcr.io', name: 'library/alpine' }), false, 'patterns are per upstream');
  assert.equal(allows(rules, alice, 'pull', { upstream: 'docker.io', name: 'library/alpine' }), false, 'anonymous grants are not everyone\'s');
  assert.equal(allows(rules, alice, 'pull', { upstream: 'ghcr.io', name: 'acme/team/app' }), true);
  assert.equal(allows(rules, ci, 'warm', { upstream: 'docker.io', name: 'x/y' }), true);
  assert.equal(allows(rules, alice, 'warm', { upstream: 'docker.io', name: 'x/y' }), false);
  assert.equal(allows(rules, alice, 'admin'), true);
  assert.equal(allows(rules, ci, 'admin'), false);
  assert.equal(allows(rules, anonymous, 'admin'), false);
  const authenticated = parseRules('pull quay.io/** to authenticated', names) as Rule[];
  assert.equal(allows(authenticated, ci, 'pull', { upstream: 'quay.io', name: 'a' }), true);
  assert.equal(allows(authenticated, anonymous, 'pull', { upstream: 'quay.io', name: 'a' }), false);
  for (const [text, problem] of [
    ['pull docker.io/** to mallory', /"mallory" is not a user/],
    ['admin to anonymous', /never granted to anonymous/],
    ['admin docker.io/** to alice', /without a pattern/],
    ['push docker.io/** to alice', /pull, warm or admin/],
    ['pull to alice', /needs a repository pattern/],
    ['pull library/* to alice', /must start with an upstream host/],
    ['pull docker.io/**/x to alice', /\*\* may only be the last/],
    ['pull docker.io/library/*', /expected "<grant>/],
  ] as const) {
    assert.match(parseRules(text, names) as string, problem, text);
  }
  assert.deepEqual(defaultRules(['docker.io']), [{ grant: 'pull', pattern: 'docker.io/**', to: ['anonymous'] }]);
});

test('the cold-work limit: a bucket per key, refilled over the minute, with the wait it needs', async () => {
  let now = 0;
  const limiter = new MemoryRateLimiter(3, () => now);
  for (let i = 0; i < 3; i++) assert.deepEqual(await limiter.take('a'), { allowed: true });
  assert.deepEqual(await limiter.take('a'), { allowed: false, retryAfterSeconds: 20 });
  assert.deepEqual(await limiter.take('b'), { allowed: true }, 'another key has its own');
  now += 20_000;
  assert.deepEqual(await limiter.take('a'), { allowed: true });
  assert.equal((await limiter.take('a')).allowed, false);
  now += 10 * 60_000;
  for (let i = 0; i < 3; i++) assert.deepEqual(await limiter.take('a'), { allowed: true }, 'a quiet spell refills to the burst, not beyond');
  assert.equal((await limiter.take('a')).allowed, false);
});

test('auth configuration is validated at start, naming the variable and never quoting a secret', async () => {
  const hash = await hashPassword('pw');
  const { token, hash: tokenHash } = await newStaticToken();
  const ok = parseConfig({ AUTH_USERS: JSON.stringify({ alice: hash }), AUTH_TOKENS: JSON.stringify({ ci: tokenHash }), AUTH_RULES: 'pull docker.io/** to alice, ci' });
  assert.deepEqual([...ok.auth.users.keys()], ['alice']);
  assert.equal(ok.auth.keysGenerated, true);
  const access = new Access(ok.auth);
  assert.deepEqual(await access.basic('alice', 'pw'), { kind: 'user', name: 'alice' });
  assert.equal(await access.basic('alice', 'wrong'), undefined);
  assert.deepEqual(await access.staticToken(token), { kind: 'token', name: 'ci' });
  assert.deepEqual(await access.basic('ci', token), { kind: 'token', name: 'ci' });
  assert.equal(await access.staticToken(`${token}x`), undefined);
  const fails = (env: Record<string, string>, variable: string, problem: RegExp, secret?: string) =>
    assert.throws(
      () => parseConfig(env),
      (e: Error) => e instanceof ConfigError && e.variable === variable && problem.test(e.message) && (secret === undefined || !e.message.includes(secret)),
      `${variable} ${problem}`,
    );
  fails({ AUTH_USERS: '{"alice":"hunter2-plain"}' }, 'AUTH_USERS', /alice: not a password hash/, 'hunter2-plain');
  fails({ AUTH_USERS: 'not json hunter2' }, 'AUTH_USERS', /not valid JSON/, 'hunter2');
  fails({ AUTH_USERS: JSON.stringify({ anonymous: hash }) }, 'AUTH_USERS', /not a usable name/);
  fails({ AUTH_TOKENS: JSON.stringify({ ci: token }) }, 'AUTH_TOKENS', /ci: not a token hash/, token);
  fails({ AUTH_USERS: JSON.stringify({ ci: hash }), AUTH_TOKENS: JSON.stringify({ ci: tokenHash }) }, 'AUTH_TOKENS', /also a user/);
  fails({ AUTH_RULES: 'pull docker.io/** to alice' }, 'AUTH_RULES', /"alice" is not a user/);
  fails({ AUTH_TOKEN_KEYS: 'k1:c2hvcnQ' }, 'AUTH_TOKEN_KEYS', /at least 32 bytes/, 'c2hvcnQ');
  fails({ AUTH_TOKEN_KEYS: `k1:${'A'.repeat(43)},k1:${'B'.repeat(43)}` }, 'AUTH_TOKEN_KEYS', /same id/);
  fails({ AUTH_SERVICE: 'has space' }, 'AUTH_SERVICE', /printable ASCII/);
  fails({ COLD_RATE_PER_MINUTE: 'lots' }, 'COLD_RATE_PER_MINUTE', /whole number/);
  // Zero configuration: anonymous pull of the upstreams without credentials, none of the others.
  const zero = parseConfig({ UPSTREAMS: JSON.stringify({ 'private.example': { url: 'https://p.example', username: 'u', password: 'p' } }) });
  assert.equal(zero.auth.defaultRules, true);
  assert.equal(zero.coldRatePerMinute, 0, 'off on 127.0.0.1');
  assert.equal(parseConfig({ HOST: '0.0.0.0' }).coldRatePerMinute, 120, 'on elsewhere');
  const open = new Access(zero.auth);
  assert.equal(open.anonymousOnly, true);
  assert.equal(open.may(anonymous, 'pull', { upstream: 'docker.io', name: 'library/alpine' }), true);
  assert.equal(open.may(anonymous, 'pull', { upstream: 'private.example', name: 'x/y' }), false, 'an upstream with credentials is not anonymous by default');
});
