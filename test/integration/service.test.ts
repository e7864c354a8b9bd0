// The Node server as a service: the process `npm start` or a supervisor starts is the one
// that stops, cleanly, on SIGTERM and SIGINT (jobs that outlast the grace are given back);
// and a start-up that cannot work (port taken, store or database unusable) stops at once
// with one line naming what to fix, exit status 2; a stored file goes out from its
// descriptor, and a client that goes away leaves no file open.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readdirSync, readlinkSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { eq, sql } from 'drizzle-orm';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { jobs } from '../../schema/jobs.ts';
import { freePort, startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startFaultyProxy } from '../setup/faulty-proxy.ts';
import { runServerToExit, startServer } from '../setup/server.ts';
import { s3ServerEnv, s3TestBucket } from '../setup/s3.ts';
import { until } from '../setup/process.ts';

const noS3 = !process.env.S3_TEST_ENDPOINT && 'needs Ceph RGW (npm test starts it)';
let dir: string;
let registry: Registry;
let image: BuiltImage;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-service-'));
  registry = await startRegistry();
  image = await pushImage(registry, 'library/svc', '1', [{ 'data.bin': randomBytes(2_000_000) }]);
});
after(async () => {
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });

test('npm start stopped with SIGTERM to its PID: the server itself stops, its port is free, no process is left', { timeout: 120_000 }, async () => {
  const port = await freePort();
  const npm = spawn('npm', ['start'], {
    cwd: new URL('../..', import.meta.url).pathname,
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', DATA_DIR: join(dir, 'npm-start'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  npm.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
  npm.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
  const exited = new Promise<number | null>((r) => npm.once('exit', (code) => r(code)));
  await until(async () => /"msg":"listening".*"pid":\d+/.test(output), 60_000, 'npm start to listen');
  const serverPid = Number(/"msg":"listening".*"pid":(\d+)/.exec(output)![1]);
  assert.notEqual(serverPid, npm.pid);
  assert.equal((await fetch(`http://127.0.0.1:${port}/v2/`)).status, 200);
  npm.kill('SIGTERM');
  assert.equal(await exited, 0, output);
  assert.match(output, /"msg":"stopped","signal":"SIGTERM"/);
  assert.equal(alive(serverPid), false, 'the server process is gone');
  assert.equal(await listening(port), false, 'the port is free');
});

test('SIGINT stops the server cleanly; a job still running after STOP_GRACE_SECONDS is given back, runnable at once', { timeout: 120_000 }, async () => {
  // The upstream sends half of each blob and holds the connection: the ingest cannot end.
  const proxy = await startFaultyProxy(registry.url);
  const data = join(dir, 'grace');
  const server = await startServer({ DATA_DIR: data, UPSTREAMS: JSON.stringify({ 'docker.io': { url: proxy.url } }), STOP_GRACE_SECONDS: '1', INGEST_CONCURRENCY: '1' });
  const { db, close } = await openDatabase(`file:${join(data, 'pullthrough.db')}`);
  try {
    proxy.fault = 'stall';
    assert.equal((await fetch(`${server.url}/v2/svc/manifests/1`)).status, 200);
    await until(async () => (await db.select().from(jobs).where(eq(jobs.state, 'running'))).length > 0, 30_000, 'an ingest job to run');
    const exited = new Promise<number | null>((r) => server.child.once('exit', (code) => r(code)));
    server.child.kill('SIGINT');
    assert.equal(await exited, 0, server.output());
    assert.match(server.output(), /"msg":"stop grace over","releasedJobs":1/);
    const [job] = await db.select().from(jobs).where(eq(jobs.state, 'queued'));
    assert.ok(job, 'the running job is queued again');
    assert.equal(job.leaseOwner, null);
    assert.ok(job.runAt <= Date.now());
  } finally {
    close();
    proxy.fault = 'none';
    await server.stop();
    await proxy.stop();
  }
});

test('a taken port: one line naming the address, exit 2, no stack trace', async () => {
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
  const port = (taken.address() as { port: number }).port;
  try {
    const out = await runServerToExit({ DATA_DIR: join(dir, 'taken') }, port);
    assert.equal(out.code, 2);
    assert.equal(out.stderr, `pullthrough: 127.0.0.1:${port} is already in use (HOST, PORT): another server listens there\n`);
  } finally {
    taken.close();
  }
});

test('LIBSQL_URL where no database answers: start-up stops naming it', async () => {
  const port = await freePort();
  const out = await runServerToExit({ DATA_DIR: join(dir, 'nodb'), LIBSQL_URL: `http://127.0.0.1:${port}`, LIBSQL_AUTH_TOKEN: 'secret-token-never-shown' });
  assert.equal(out.code, 2);
  assert.equal(out.stderr, `pullthrough: LIBSQL_URL: cannot open the database at http://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}\n`);
});

test('S3 misconfigured (no credentials, wrong endpoint, missing bucket, unknown key, wrong secret): start-up stops naming the variable', { skip: noS3 }, async () => {
  const bucket = (await s3TestBucket('service'))!.bucket;
  const good = s3ServerEnv(bucket);
  const closed = `http://127.0.0.1:${await freePort()}`;
  // The SDK's default credential chain must not reach for instance metadata (not loopback).
  const noAmbient = { AWS_EC2_METADATA_DISABLED: 'true', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent', AWS_CONFIG_FILE: '/nonexistent' };
  const cases: Array<[string, Record<string, string>, string]> = [
    ['no credentials', { ...good, S3_ACCESS_KEY_ID: '', S3_SECRET_ACCESS_KEY: '' }, `S3_ACCESS_KEY_ID: the blob store cannot be used: no credentials for the bucket: set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (bucket ${bucket}, endpoint ${good.S3_ENDPOINT})`],
    ['wrong endpoint', { ...good, S3_ENDPOINT: closed }, `S3_ENDPOINT: the blob store cannot be used: nothing answers at the S3 endpoint (ECONNREFUSED) (bucket ${bucket}, endpoint ${closed})`],
    ['missing bucket', { ...good, S3_BUCKET: `${bucket}-missing` }, `S3_BUCKET: the blob store cannot be used: no bucket of this name at the S3 endpoint (bucket ${bucket}-missing, endpoint ${good.S3_ENDPOINT})`],
    ['unknown access key', { ...good, S3_ACCESS_KEY_ID: 'nobody-knows-this-key' }, `S3_ACCESS_KEY_ID: the blob store cannot be used: the S3 endpoint does not know this access key (bucket ${bucket}, endpoint ${good.S3_ENDPOINT})`],
    ['wrong secret', { ...good, S3_SECRET_ACCESS_KEY: 'wrong-secret-never-shown' }, `S3_SECRET_ACCESS_KEY: the blob store cannot be used: the secret key does not match the access key (requests are refused as wrongly signed) (bucket ${bucket}, endpoint ${good.S3_ENDPOINT})`],
  ];
  for (const [what, env, line] of cases) {
    const out = await runServerToExit({ DATA_DIR: join(dir, `s3-${what.replace(/\W+/g, '-')}`), ...noAmbient, ...env });
    assert.equal(out.code, 2, what);
    assert.equal(out.stderr, `pullthrough: ${line}\n`, what);
    assert.doesNotMatch(out.stdout + out.stderr, new RegExp(process.env.S3_TEST_SECRET_ACCESS_KEY!), `${what}: no secret in the output`);
  }
});

test('a bucket that goes away after start-up: requests that need it are 503 UNAVAILABLE naming S3_BUCKET, and the log says what to fix', { skip: noS3, timeout: 60_000 }, async () => {
  const { client, bucket } = (await s3TestBucket('service-gone'))!;
  const server = await startServer({ DATA_DIR: join(dir, 'gone'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }), ...s3ServerEnv(bucket) });
  try {
    const { DeleteBucketCommand } = await import('@aws-sdk/client-s3');
    await client.send(new DeleteBucketCommand({ Bucket: bucket }));
    const res = await fetch(`${server.url}/v2/svc/manifests/${image.manifestDigest}`);
    assert.equal(res.status, 503);
    assert.deepEqual(await res.json(), { errors: [{ code: 'UNAVAILABLE', message: 'the blob store cannot be used', detail: { variable: 'S3_BUCKET', problem: 'no bucket of this name at the S3 endpoint' } }] });
    const line = server.output().split('\n').find((l) => l.includes('"msg":"the blob store cannot be used"'));
    assert.ok(line, server.output());
    assert.deepEqual(JSON.parse(line), { level: 'error', msg: 'the blob store cannot be used', fix: 'S3_BUCKET', problem: 'no bucket of this name at the S3 endpoint', bucket, endpoint: process.env.S3_TEST_ENDPOINT });
    assert.doesNotMatch(server.output(), new RegExp(process.env.S3_TEST_SECRET_ACCESS_KEY!));
  } finally {
    await server.stop();
  }
});

test('a stored blob goes out from its file, whole and by Range, byte for byte; a client that goes away mid-blob has the file closed, and the server serves on', { timeout: 120_000 }, async () => {
  const big = await pushImage(registry, 'library/big', '1', [{ 'data.bin': randomBytes(24_000_000) }]);
  const layer = big.layers[0]!;
  const bytes = Buffer.from(await (await fetch(`${registry.url}/v2/library/big/blobs/${layer.digest}`)).arrayBuffer());
  const data = join(dir, 'send-file');
  const server = await startServer({ DATA_DIR: data, UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }) });
  try {
    const url = `${server.url}/v2/library/big/blobs/${layer.digest}`;
    await (await fetch(`${server.url}/v2/library/big/manifests/1`)).arrayBuffer();
    const { db, close } = await openDatabase(`file:${join(data, 'pullthrough.db')}`);
    try {
      const state = async () => (await db.all<{ state: string }>(sql`SELECT state FROM blobs WHERE digest = ${layer.digest}`))[0]?.state;
      await until(async () => (await state()) === 'ready', 60_000, 'the layer stored');
    } finally {
      close();
    }
    const file = join(data, 'store', 'blobs', 'sha256', layer.digest.slice('sha256:'.length));
    const openOnFile = () => readdirSync(`/proc/${server.child.pid}/fd`).filter((fd) => {
      try {
        return readlinkSync(`/proc/${server.child.pid}/fd/${fd}`) === file;
      } catch {
        return false;
      }
    }).length;
    const whole = await fetch(url);
    assert.equal(whole.status, 200);
    assert.ok(Buffer.from(await whole.arrayBuffer()).equals(bytes), 'the whole blob');
    for (const [range, from, to] of [['bytes=0-0', 0, 0], ['bytes=1048570-3145740', 1048570, 3145740], [`bytes=${bytes.length - 5}-`, bytes.length - 5, bytes.length - 1]] as const) {
      const part = await fetch(url, { headers: { range } });
      assert.equal(part.status, 206, range);
      assert.equal(part.headers.get('content-range'), `bytes ${from}-${to}/${bytes.length}`);
      assert.ok(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(from, to + 1)), range);
    }
    // A client that reads the first bytes and goes away.
    await new Promise<void>((resolve, reject) => {
      const req = httpGet(url, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (e) => (req.destroyed ? resolve() : reject(e)));
    });
    await until(async () => openOnFile() === 0, 10_000, 'the file closed after the client went away');
    const again = await fetch(url);
    assert.ok(Buffer.from(await again.arrayBuffer()).equals(bytes), 'the blob again, whole');
    assert.equal(openOnFile(), 0);
  } finally {
    await server.stop();
  }
});
