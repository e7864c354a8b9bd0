/**
 * A result of a pure function remembered by key in `memo`, which holds at most `limit`
 * entries: past it, the oldest goes first. For answers that cannot change while the
 * process runs (access decisions, parsed headers).
 */
export function remembered<V>(memo: Map<string, V>, limit: number, key: string, compute: () => V): V {
  const kept = memo.get(key);
  if (kept !== undefined) return kept;
  const value = compute();
  if (memo.size >= limit) memo.delete(memo.keys().next().value!);
  memo.set(key, value);
  return value;
}
