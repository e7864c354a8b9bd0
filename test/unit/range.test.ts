import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveRange } from '../../core/oci/range.ts';

test('byte ranges resolve against the size', () => {
  assert.deepEqual(resolveRange('bytes=0-9', 100), { start: 0, end: 9 });
  assert.deepEqual(resolveRange('bytes=90-', 100), { start: 90, end: 99 });
  assert.deepEqual(resolveRange('bytes=-10', 100), { start: 90, end: 99 });
  assert.deepEqual(resolveRange('bytes=95-200', 100), { start: 95, end: 99 });
  assert.equal(resolveRange(undefined, 100), undefined);
  assert.equal(resolveRange('bytes=0-1,5-6', 100), undefined, 'multiple ranges: whole object');
  assert.equal(resolveRange('bytes=9-1', 100), undefined, 'invalid syntax is ignored, as RFC 9110 says');
});

test('unsatisfiable ranges are RANGE_INVALID', () => {
  assert.throws(() => resolveRange('bytes=100-', 100), { code: 'RANGE_INVALID' });
  assert.throws(() => resolveRange('bytes=-0', 100), { code: 'RANGE_INVALID' });
});
