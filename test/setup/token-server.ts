// A Docker token service for the test registry's `auth.token`, as Docker Hub's
// auth.docker.io works: GET /token?service=...&scope=repository:NAME:ACTIONS answers
// `{token, expires_in}`, an ES256 JWT the registry verifies against a self-signed
// certificate (its `rootcertbundle`). Anonymous callers may pull repositories under
// `library/public*`; Basic credentials that match get every action they ask for.
import { execFile } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, randomUUID, sign } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate the registry trusts. */
  certFile: string;
  username: string;
  password: string;
  /** Every token handed out, and how many token requests came in. */
  issued: string[];
  requests(): number;
  stop(): Promise<void>;
}

const base64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

/** libtrust's key ID (distribution matches it to the JWT `kid`): base32 of SHA-256 of the SPKI, 4-char groups. */
function libtrustKeyId(spkiDer: Buffer): string {
  const bytes = createHash('sha256').update(spkiDer).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const b of bytes) bits += b.toString(2).padStart(8, '0');
  let out = '';
  for (let i = 0; i + 5 <= bits.length; i += 5) out += alphabet[parseInt(bits.slice(i, i + 5), 2)];
  return out.match(/.{4}/g)!.join(':');
}

export async function startTokenServer(): Promise<TokenServer> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-token-'));
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=pullthrough-test-token', '-keyout', keyFile, '-out', certFile,
  ]);
  const key = createPrivateKey(await readFile(keyFile));
  const kid = libtrustKeyId(createPublicKey(key).export({ type: 'spki', format: 'der' }));
  const state = { service: 'pullthrough-test', issuer: 'pullthrough-test-issuer', username: 'puller', password: `pw-${randomUUID()}`, issued: [] as string[], count: 0 };

  const server: Server = createServer((req, res) => {
    state.count++;
    const url = new URL(req.url ?? '/', 'http://token');
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    const [user, pass] = basic ? Buffer.from(basic[1]!, 'base64').toString().split(':') : [];
    const authenticated = user === state.username && pass === state.password;
    if (basic && !authenticated) {
      res.writeHead(401, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ details: 'incorrect username or password' }));
    }
    const access = url.searchParams.getAll('scope').flatMap((scope) => {
      const [type, name, actions] = scope.split(':');
      if (type !== 'repository' || !name || !actions) return [];
      const allowed = authenticated ? actions.split(',') : name.startsWith('library/public') ? ['pull'] : [];
      return allowed.length > 0 ? [{ type, name, actions: allowed }] : [];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = base64url(JSON.stringify({ typ: 'JWT', alg: 'ES256', kid }));
    const claims = base64url(JSON.stringify({ iss: state.issuer, sub: user ?? '', aud: url.searchParams.get('service'), exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access }));
    const signature = sign('sha256', Buffer.from(`${header}.${claims}`), { key, dsaEncoding: 'ieee-p1363' });
    const token = `${header}.${claims}.${base64url(signature)}`;
    state.issued.push(token);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, expires_in: 300, issued_at: new Date(now * 1000).toISOString() }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    realm: `http://127.0.0.1:${(server.address() as { port: number }).port}/token`,
    service: state.service,
    issuer: state.issuer,
    certFile,
    username: state.username,
    password: state.password,
    issued: state.issued,
    requests: () => state.count,
    async stop() {
      await new Promise<void>((r) => server.close(() => r()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
