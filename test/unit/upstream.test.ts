import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseChallenge } from '../../core/adapters/http-upstream.ts';

test('Bearer challenges parse realm, service and scope', () => {
  assert.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
  });
  assert.deepEqual(parseChallenge('Basic realm="Registry"'), { scheme: 'basic', params: { realm: 'Registry' } });
});
