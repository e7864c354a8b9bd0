// The auth primitives of issue 13: password hashes, signed tokens, credential and scope
// parsers (fuzzed: untrusted input never throws), repository patterns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { hashPassword, parsePasswordHash, verifyPassword, PBKDF2_ITERATIONS, constantTimeEqual } from '../../core/auth/password.ts';
import { signToken, verifyToken, type SigningKey, type TokenClaims } from '../../core/auth/token.ts';
import { parseAuthorization, parseScope } from '../../core/auth/credentials.ts';
import { matchesPattern, patternProblem } from '../../core/auth/patterns.ts';

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
