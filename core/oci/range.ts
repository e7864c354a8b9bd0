import { OciError } from './errors.ts';
import type { ByteRange } from '../ports/blob-store.ts';

/**
 * Resolves a `Range` header against an object's size. Undefined means "serve it all"
 * (no header, or a form we do not serve such as several ranges); throws RANGE_INVALID
 * when the range cannot be satisfied.
 */
export function resolveRange(header: string | undefined, size: number): ByteRange | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) throw new OciError('RANGE_INVALID', 'requested range not satisfiable', { range: header, size });
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (Number(m[2] || start) < start) return undefined;
  }
  if (start >= size) throw new OciError('RANGE_INVALID', 'requested range not satisfiable', { range: header, size });
  return { start, end };
}
