// A DATA_DIR filled with `count` stored blobs, as if pulled long ago: their objects in the
// filesystem store (written then, by their times) and their rows (ready, pulled `ageMs` ago, oldest first by index) in
// the libSQL file the server opens. What garbage-collection tests and the bench start from.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { blobs } from '../../schema/blobs.ts';
import { hashPassword } from '../../core/auth/password.ts';

export interface Seeded {
  digests: string[];
  /** Bytes per blob. */
  size: number;
}

export async function seedStoredBlobs(dataDir: string, count: number, options: { size?: number; ageMs?: number } = {}): Promise<Seeded> {
  const size = options.size ?? 1000;
  const newest = Date.now() - (options.ageMs ?? 2 * 24 * 3600_000);
  const dir = join(dataDir, 'store', 'blobs', 'sha256');
  await mkdir(dir, { recursive: true });
  const { db, close } = await openDatabase(`file:${join(dataDir, 'pullthrough.db')}`);
  const digests: string[] = [];
  try {
    for (let start = 0; start < count; start += 500) {
      const rows = [];
      for (let i = start; i < Math.min(count, start + 500); i++) {
        const bytes = randomBytes(size);
        const hex = createHash('sha256').update(bytes).digest('hex');
        const at = newest - (count - i) * 1000;
        await writeFile(join(dir, hex), bytes);
        await utimes(join(dir, hex), new Date(at), new Date(at));
        digests.push(`sha256:${hex}`);
        rows.push({ digest: `sha256:${hex}`, state: 'ready' as const, size, storageKey: `blobs/sha256/${hex}`, upstream: 'docker.io', name: 'library/seeded', createdAt: at, updatedAt: at, readyAt: at, lastPulledAt: at, pullCount: 1 });
      }
      await db.insert(blobs).values(rows);
    }
  } finally {
    close();
  }
  return { digests, size };
}

/** A server on a seeded DATA_DIR with room for `keepBytes`, no timer run, and `op` (password `password`) the admin who asks for runs. */
export async function gcServerEnv(dataDir: string, keepBytes: number, password: string): Promise<{ env: Record<string, string>; admin: Record<string, string> }> {
  return {
    env: {
      DATA_DIR: dataDir,
      UPSTREAMS: JSON.stringify({ 'docker.io': { url: 'http://127.0.0.1:9' } }),
      AUTH_USERS: JSON.stringify({ op: await hashPassword(password) }),
      AUTH_RULES: 'admin to op',
      CACHE_MAX_BYTES: String(keepBytes),
      CACHE_LOW_WATER_PERCENT: '100',
      GC_INTERVAL_SECONDS: '0',
    },
    admin: { authorization: `Basic ${Buffer.from(`op:${password}`).toString('base64')}` },
  };
}
