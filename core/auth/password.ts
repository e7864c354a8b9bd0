/**
 * Password hashes for configured users: PBKDF2-SHA256 through Web Crypto, which Node and
 * workerd both have (scrypt and argon2 are not in Web Crypto). workerd refuses PBKDF2
 * above 100,000 iterations, so that is the count: a hash made by `pullthrough
 * hash-password` must verify on both runtimes.
 *
 * Format: `pbkdf2-sha256$<iterations>$<salt, base64url>$<32-byte key, base64url>`.
 */

/** What workerd's Web Crypto accepts; a hash asking for more cannot be verified there. */
export const MAX_PBKDF2_ITERATIONS = 100_000;
export const PBKDF2_ITERATIONS = MAX_PBKDF2_ITERATIONS;
const KEY_BYTES = 32;
const SALT_BYTES = 16;

export const base64url = {
  encode(bytes: Uint8Array): string {
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
  },
  /** Undefined when `text` is not base64url. */
  decode(text: string): Uint8Array | undefined {
    if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return undefined;
    const s = atob(text.replaceAll('-', '+').replaceAll('_', '/'));
    return Uint8Array.from(s, (c) => c.charCodeAt(0));
  },
};

/** Equal bytes, in time that depends only on the lengths. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

async function derive(password: string, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(password), 'PBKDF2', false, ['deriveBits']);
  const bits = await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations }, key, KEY_BYTES * 8);
  return new Uint8Array(bits);
}

export async function hashPassword(password: string, iterations = PBKDF2_ITERATIONS): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const key = await derive(password, salt, iterations);
  return `pbkdf2-sha256$${iterations}$${base64url.encode(salt)}$${base64url.encode(key)}`;
}

export interface ParsedHash {
  iterations: number;
  salt: Uint8Array;
  key: Uint8Array;
}

/** The parts of a stored hash, or a message saying what is wrong with it (for config validation). */
export function parsePasswordHash(stored: string): ParsedHash | string {
  const [scheme, count, salt, key, ...rest] = stored.split('$');
  if (scheme !== 'pbkdf2-sha256' || rest.length > 0 || count === undefined || salt === undefined || key === undefined) {
    return 'not a password hash made by `pullthrough hash-password` (pbkdf2-sha256$<iterations>$<salt>$<key>)';
  }
  const iterations = Number(count);
  if (!Number.isSafeInteger(iterations) || iterations < 10_000 || iterations > MAX_PBKDF2_ITERATIONS) {
    return `the iteration count must be between 10000 and ${MAX_PBKDF2_ITERATIONS} (what Workers accept)`;
  }
  const saltBytes = base64url.decode(salt);
  const keyBytes = base64url.decode(key);
  if (!saltBytes || saltBytes.length < 8) return 'the salt is not base64url of 8 bytes or more';
  if (!keyBytes || keyBytes.length !== KEY_BYTES) return `the key is not base64url of ${KEY_BYTES} bytes`;
  return { iterations, salt: saltBytes, key: keyBytes };
}

/** Whether `password` matches `stored`; false for a malformed hash. */
export async function verifyPassword(password: string, stored: string | ParsedHash): Promise<boolean> {
  const parsed = typeof stored === 'string' ? parsePasswordHash(stored) : stored;
  if (typeof parsed === 'string') return false;
  return constantTimeEqual(await derive(password, parsed.salt, parsed.iterations), parsed.key);
}
