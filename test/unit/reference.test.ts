import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDigest, parseReference, resolveTarget } from '../../core/oci/reference.ts';
import { blobKey } from '../../core/oci/keys.ts';
import { OciError } from '../../core/oci/errors.ts';

const HEX = 'a'.repeat(64);
const hosts = new Set(['docker.io', 'ghcr.io']);
const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof OciError);
    return e.code;
  }
  assert.fail('expected an OciError');
};

test('a sha256 digest parses and maps to the public bucket key', () => {
  const d = parseDigest(`sha256:${HEX}`);
  assert.deepEqual(d, { algorithm: 'sha256', hex: HEX, value: `sha256:${HEX}` });
  assert.equal(blobKey(d), `blobs/sha256/${HEX}`);
});

test('malformed digests are DIGEST_INVALID', () => {
  for (const bad of ['sha256:abc', `sha256:${'A'.repeat(64)}`, `md5:${HEX}`, 'sha256:', `sha256:${HEX}0`, 'nope']) {
    assert.equal(code(() => parseDigest(bad)), 'DIGEST_INVALID', bad);
  }
});

test('manifest references are tags or digests; anything else is MANIFEST_UNKNOWN (TAG_INVALID is for pushes)', () => {
  assert.deepEqual(parseReference('3.19'), { tag: '3.19' });
  assert.equal(code(() => parseReference('-bad')), 'MANIFEST_UNKNOWN');
  assert.equal(code(() => parseReference('x'.repeat(129))), 'MANIFEST_UNKNOWN');
  assert.equal(code(() => parseReference('sha256:123')), 'MANIFEST_UNKNOWN');
  assert.equal(code(() => parseReference(`md5:${'0'.repeat(32)}`)), 'MANIFEST_UNKNOWN');
});

test('upstream selection: ns, then a configured first segment, then the default', () => {
  assert.deepEqual(resolveTarget('alpine', undefined, hosts, 'docker.io'), { upstream: 'docker.io', name: 'library/alpine' });
  assert.deepEqual(resolveTarget('ghcr.io/org/app', undefined, hosts, 'docker.io'), { upstream: 'ghcr.io', name: 'org/app' });
  assert.deepEqual(resolveTarget('org/app', 'ghcr.io', hosts, 'docker.io'), { upstream: 'ghcr.io', name: 'org/app' });
  assert.deepEqual(resolveTarget('alpine', 'docker.io', hosts, 'docker.io'), { upstream: 'docker.io', name: 'library/alpine' });
});

test('an unconfigured host is never selected', () => {
  assert.equal(code(() => resolveTarget('org/app', 'evil.example', hosts, 'docker.io')), 'DENIED');
  // A host-looking first segment that is not configured stays part of a docker.io name.
  assert.deepEqual(resolveTarget('evil.example/app', undefined, hosts, 'docker.io'), { upstream: 'docker.io', name: 'evil.example/app' });
});

test('invalid repository names are NAME_INVALID', () => {
  for (const bad of ['UPPER', 'a//b', '../etc', 'a/', 'ghcr.io/', 'x'.repeat(256)]) {
    assert.equal(code(() => resolveTarget(bad, undefined, hosts, 'docker.io')), 'NAME_INVALID', bad);
  }
});

test('image references split into repository path and tag or digest', async () => {
  const { splitImageReference } = await import('../../core/oci/reference.ts');
  assert.deepEqual(splitImageReference('alpine'), { path: 'alpine', reference: 'latest' });
  assert.deepEqual(splitImageReference('alpine:3.20'), { path: 'alpine', reference: '3.20' });
  assert.deepEqual(splitImageReference('ghcr.io/org/app:1.2'), { path: 'ghcr.io/org/app', reference: '1.2' });
  assert.deepEqual(splitImageReference(`docker.io/library/alpine@sha256:${'a'.repeat(64)}`), { path: 'docker.io/library/alpine', reference: `sha256:${'a'.repeat(64)}` });
  assert.deepEqual(splitImageReference('registry:5000/team/app'), { path: 'registry:5000/team/app', reference: 'latest' });
});
