import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BoundedCache } from '../../core/registry/memory-cache.ts';

const clockAt = (start: number) => {
  const clock = () => clock.now;
  clock.now = start;
  return clock;
};

test('entries expire at their own time', () => {
  const clock = clockAt(1000);
  const cache = new BoundedCache<string>({ maxEntries: 10, maxBytes: 1 << 20 }, clock);
  cache.set('a', 'A', 1500);
  cache.set('b', 'B', Infinity);
  assert.equal(cache.get('a'), 'A');
  clock.now = 1500;
  assert.equal(cache.get('a'), undefined, 'gone at its expiry');
  assert.equal(cache.get('b'), 'B');
  assert.equal(cache.size, 1);
  cache.set('c', 'C', 1500);
  assert.equal(cache.get('c'), undefined, 'an entry already expired is not kept');
});

test('past its entry bound the least recently used entry goes first', () => {
  const cache = new BoundedCache<number>({ maxEntries: 3, maxBytes: 1 << 20 }, () => 0);
  for (const k of ['a', 'b', 'c']) cache.set(k, 1, Infinity);
  cache.get('a');
  cache.set('d', 1, Infinity);
  assert.deepEqual(['a', 'b', 'c', 'd'].map((k) => cache.get(k) !== undefined), [true, false, true, true]);
  assert.equal(cache.size, 3);
});

test('past its byte bound entries go until the new one fits; one larger than the bound is not kept', () => {
  const cache = new BoundedCache<Uint8Array>({ maxEntries: 100, maxBytes: 3000 }, () => 0);
  const kb = new Uint8Array(1000);
  cache.set('a', kb, Infinity, kb.byteLength);
  cache.set('b', kb, Infinity, kb.byteLength);
  assert.equal(cache.size, 2);
  assert.ok(cache.bytes > 2000 && cache.bytes <= 3000, `${cache.bytes}`);
  cache.set('c', kb, Infinity, kb.byteLength);
  assert.equal(cache.get('a'), undefined, 'the oldest made room');
  assert.ok(cache.get('b') && cache.get('c'));
  assert.ok(cache.bytes <= 3000);
  cache.set('huge', new Uint8Array(5000), Infinity, 5000);
  assert.equal(cache.get('huge'), undefined);
  assert.ok(cache.get('b') && cache.get('c'), 'nothing was pushed out for it');
});

test('replacing and deleting keep the byte count exact', () => {
  const cache = new BoundedCache<string>({ maxEntries: 100, maxBytes: 1 << 20 }, () => 0);
  cache.set('n:1', 'x', Infinity, 100);
  cache.set('n:2', 'x', Infinity, 100);
  cache.set('b:1', 'x', Infinity, 100);
  const one = cache.bytes / 3;
  cache.set('b:1', 'y', Infinity, 100);
  assert.equal(cache.bytes, one * 3);
  cache.delete('n:1');
  cache.delete('n:2');
  assert.equal(cache.size, 1);
  assert.equal(cache.bytes, one);
  cache.delete('b:1');
  cache.delete('b:1');
  assert.equal(cache.bytes, 0);
  assert.equal(cache.size, 0);
});

test('with no entries allowed, nothing is kept', () => {
  const cache = new BoundedCache<string>({ maxEntries: 0, maxBytes: 1 << 20 }, () => 0);
  cache.set('a', 'A', Infinity);
  assert.equal(cache.get('a'), undefined);
});

test('a kept entry is gone once dropped, replaced, pushed out or found expired, and holds until then', () => {
  const clock = clockAt(1000);
  const cache = new BoundedCache<string>({ maxEntries: 2, maxBytes: 1 << 20 }, clock);
  const live = (k: { until: number; gone: boolean } | undefined) => k !== undefined && !k.gone && k.until > clock.now;
  cache.set('a', 'A', Infinity);
  const a = cache.kept('a')!;
  assert.equal(a.value, 'A');
  assert.ok(live(a));
  cache.set('a', 'A2', Infinity);
  assert.ok(a.gone, 'replaced: the old entry is gone, even with the same key kept');
  assert.ok(live(cache.kept('a')));
  const replaced = cache.kept('a')!;
  cache.delete('a');
  assert.ok(replaced.gone, 'dropped');
  cache.set('b', 'B', 2000);
  cache.set('c', 'C', Infinity);
  const b = cache.kept('b')!;
  cache.set('d', 'D', Infinity);
  assert.ok(b.gone, 'pushed out by the entry bound');
  cache.set('e', 'E', 1500);
  const e = cache.kept('e')!;
  clock.now = 1500;
  assert.equal(cache.kept('e'), undefined, 'not handed out at its expiry');
  assert.ok(!live(e), 'an expired entry does not hold, found or not');
});
