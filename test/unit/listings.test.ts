import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareTags, paginate, parseNextLink, parsePageSize } from '../../core/registry/tags.ts';
import { OciError } from '../../core/oci/errors.ts';

test('parsePageSize takes non-negative integers and refuses the rest', () => {
  assert.equal(parsePageSize(undefined), undefined);
  assert.equal(parsePageSize('0'), 0);
  assert.equal(parsePageSize('100'), 100);
  for (const bad of ['-1', '1.5', 'ten', '9999999999']) {
    assert.throws(() => parsePageSize(bad), (e: OciError) => e.code === 'PAGINATION_NUMBER_INVALID', bad);
  }
});

test('parseNextLink reads n and last from an upstream Link', () => {
  assert.deepEqual(parseNextLink('</v2/library/alpine/tags/list?last=3.19&n=50>; rel="next"'), { n: 50, last: '3.19' });
  assert.deepEqual(parseNextLink('</v2/a/tags/list?last=x>; rel=next'), { last: 'x' });
  assert.equal(parseNextLink('</v2/a/tags/list?last=x>; rel="prev"'), undefined);
  assert.equal(parseNextLink(null), undefined);
});

test('paginate cuts lexical pages after last, with a next page only when more remain', () => {
  assert.deepEqual(paginate(['c', 'a', 'b'], 2, undefined), { tags: ['a', 'b'], next: { n: 2, last: 'b' } });
  assert.deepEqual(paginate(['c', 'a', 'b'], 2, 'b'), { tags: ['c'] });
  assert.deepEqual(paginate(['a', 'b'], 2, undefined), { tags: ['a', 'b'] });
  assert.deepEqual(paginate(['a'], 0, undefined), { tags: [] });
});

test('paginate without n returns every tag after last, in lexical order', () => {
  assert.deepEqual(paginate(['c', 'a', 'b', 'd'], undefined, 'b'), { tags: ['c', 'd'] });
  assert.deepEqual(paginate(['c', 'a', 'b'], undefined, undefined), { tags: ['a', 'b', 'c'] });
  assert.deepEqual(paginate(['c', 'a', 'b'], undefined, 'zzz'), { tags: [] });
});

test("the spec's lexical order is case-insensitive, ties broken so that it is total", () => {
  assert.deepEqual(['b', 'B', 'a', 'A', '1.10', '1.9', '_x'].sort(compareTags), ['1.10', '1.9', '_x', 'A', 'a', 'B', 'b']);
  assert.deepEqual(paginate(['Beta', 'alpha', 'gamma'], undefined, 'alpha'), { tags: ['Beta', 'gamma'] });
});
