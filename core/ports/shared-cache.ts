/**
 * A cache the processes or isolates of one place share (on Workers, the Cache API of a
 * data center), for facts that stay true for a known time: the read path keeps manifests
 * and tag resolutions there (core/registry/memory-cache.ts), so that a fresh isolate does
 * not pay a database round trip for them. Entries may vanish at any time; nothing relies
 * on one being there.
 */
export interface SharedCache {
  get(key: string): Promise<Uint8Array | undefined>;
  /** Keeps `value` for `ttlSeconds` at most (at least 1). */
  put(key: string, value: Uint8Array, ttlSeconds: number): Promise<void>;
}
