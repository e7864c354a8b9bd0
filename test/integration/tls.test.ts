// TLS_CERT / TLS_KEY: the server speaks HTTPS itself, and skopeo pulls through it while
// verifying the certificate (no --src-tls-verify=false).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { get } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { digestOf } from '../../core/oci/digest.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';

const run = promisify(execFile);
let registry: Registry;
let image: BuiltImage;
let server: Server;
let dir: string;

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/tls', '1', [{ 'etc/motd': 'over https\n' }]);
  dir = await mkdtemp(join(tmpdir(), 'pt-tls-'));
  await mkdir(join(dir, 'certs'));
  // skopeo reads *.crt in --src-cert-dir as trusted roots: a self-signed cert for 127.0.0.1.
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', join(dir, 'tls.key'), '-out', join(dir, 'certs', 'ca.crt'),
  ]);
  server = await startServer({
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }),
    TLS_CERT: join(dir, 'certs', 'ca.crt'),
    TLS_KEY: join(dir, 'tls.key'),
  });
});
after(async () => {
  await server?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the server answers HTTPS with the configured certificate', async () => {
  const ca = await readFile(join(dir, 'certs', 'ca.crt'));
  const { status, version } = await new Promise<{ status: number; version: string | undefined }>((resolve, reject) => {
    get(`https://${server.host}/v2/`, { ca }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, version: res.headers['docker-distribution-api-version'] as string | undefined });
    }).on('error', reject);
  });
  assert.equal(status, 200);
  assert.equal(version, 'registry/2.0');
});

test('skopeo pulls through HTTPS, verifying the certificate', async () => {
  const dest = join(dir, 'pulled');
  await run('skopeo', ['copy', '--quiet', '--src-cert-dir', join(dir, 'certs'), `docker://${server.host}/tls:1`, `dir:${dest}`]);
  assert.equal(digestOf(await readFile(join(dest, 'manifest.json'))), image.manifestDigest);
});
