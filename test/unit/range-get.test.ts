// The rootfs writers' Range reader (workers/range-get.ts) against scripted HTTP servers on
// 127.0.0.1: what it reads, what it declines (so node:http asks instead), how it keeps
// connections and what it does when a server cuts a response or says too much.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseHead, RangeCutError, RangeGetter } from '../../cli/range-get.ts';
import { writeBatch, type FileWrite } from '../../cli/rootfs-write.ts';

const blob = randomBytes(300_000);
const servers: Server[] = [];
after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

/**
 * A server answering each request with `respond(range, socket)`; counts connections.
 * `range` is the requested [start, end] (inclusive) or undefined.
 */
async function serve(respond: (range: [number, number] | undefined, socket: Socket, request: number) => void): Promise<{ url: URL; connections: () => number }> {
  let connections = 0;
  let requests = 0;
  const server = createServer((socket) => {
    connections++;
    let pending = '';
    socket.on('data', (d) => {
      pending += d.toString('latin1');
      let end;
      while ((end = pending.indexOf('\r\n\r\n')) >= 0) {
        const head = pending.slice(0, end);
        pending = pending.slice(end + 4);
        const range = /\r\nrange: bytes=(\d+)-(\d+)/i.exec(head);
        respond(range ? [Number(range[1]), Number(range[2])] : undefined, socket, requests++);
      }
    });
    socket.on('error', () => {});
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { url: new URL(`http://127.0.0.1:${port}/layer.tar?X-Amz-Signature=abc`), connections: () => connections };
}

const partial = (socket: Socket, [start, end]: [number, number], extra = '') => {
  const body = blob.subarray(start, end + 1);
  socket.write(`HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${start}-${end}/${blob.length}\r\nContent-Length: ${body.length}\r\n${extra}\r\n`);
  socket.write(body);
};

/** Reads [start, end) and returns what the sink got (or the outcome). */
async function read(getter: RangeGetter, url: URL, start: number, end: number): Promise<{ ok: boolean; bytes: Buffer }> {
  const chunks: Buffer[] = [];
  const ok = await getter.read(url, start, end, (b) => chunks.push(Buffer.from(b)));
  return { ok, bytes: Buffer.concat(chunks) };
}

test('parseHead: status, lower-cased headers, keep-alive by HTTP version and Connection', () => {
  const head = parseHead('HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\nContent-Range: bytes 0-4/10');
  assert.equal(head.status, 206);
  assert.equal(head.headers.get('content-length'), '5');
  assert.equal(head.headers.get('x-a'), '1, 2');
  assert.equal(head.keepAlive, true);
  assert.equal(parseHead('HTTP/1.1 200 OK\r\nConnection: close').keepAlive, false);
  assert.equal(parseHead('HTTP/1.0 200 OK').keepAlive, false);
  assert.equal(parseHead('HTTP/1.0 200 OK\r\nConnection: Keep-Alive').keepAlive, true);
  assert.throws(() => parseHead('SSH-2.0-OpenSSH'), /not an HTTP\/1\.x response/);
  assert.throws(() => parseHead('HTTP/1.1 200 OK\r\nno colon here'), /malformed header line/);
});

test('ranges come back exactly, over one kept-alive connection', async () => {
  const { url, connections } = await serve((range, socket) => partial(socket, range!));
  const getter = new RangeGetter();
  for (const [start, end] of [[0, 1000], [1000, 250_000], [299_999, 300_000]] as const) {
    const got = await read(getter, url, start, end);
    assert.equal(got.ok, true);
    assert.deepEqual(got.bytes, blob.subarray(start, end));
  }
  assert.equal(connections(), 1);
  getter.close();
});

test('a connection the server closed while idle is replaced once; Connection: close is not kept', async () => {
  const { url, connections } = await serve((range, socket, request) => {
    if (request === 1) return void socket.end(); // closes the kept-alive connection instead of answering
    partial(socket, range!, request === 2 ? 'Connection: close\r\n' : '');
  });
  const getter = new RangeGetter();
  assert.deepEqual((await read(getter, url, 0, 10)).bytes, blob.subarray(0, 10));
  assert.deepEqual((await read(getter, url, 10, 20)).bytes, blob.subarray(10, 20), 'answered on a second connection');
  assert.deepEqual((await read(getter, url, 20, 30)).bytes, blob.subarray(20, 30), 'a third: the second said close');
  assert.equal(connections(), 3);
  getter.close();
});

test('anything but a plain 206 for the range is declined before the sink hears a byte', async () => {
  const answers: Record<string, (socket: Socket, range: [number, number]) => void> = {
    'a redirect': (s) => s.write('HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n'),
    'an error': (s) => s.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 13\r\n\r\nAccessDenied.'),
    'the whole object': (s) => (s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`), s.write(blob)),
    'chunked framing': (s, [a, b]) => s.write(`HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${a}-${b}/${blob.length}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`),
    'another range': (s, [a, b]) => partial(s, [a + 1, b]),
  };
  for (const [what, answer] of Object.entries(answers)) {
    const { url } = await serve((range, socket) => answer(socket, range!));
    const getter = new RangeGetter();
    const got = await read(getter, url, 100, 200);
    assert.deepEqual(got, { ok: false, bytes: Buffer.alloc(0) }, what);
    getter.close();
  }
});

test('a response cut short, or longer than its Content-Length, or a sink that throws: an error, and the connection is dropped', async () => {
  const cut = await serve((range, socket) => {
    socket.write(`HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${range![0]}-${range![1]}/${blob.length}\r\nContent-Length: ${range![1] - range![0] + 1}\r\n\r\n`);
    socket.end(blob.subarray(range![0], range![0] + 100));
  });
  await assert.rejects(read(new RangeGetter(), cut.url, 0, 5000), (e: Error) => e instanceof RangeCutError && /the layer tar download was cut/.test(e.message));

  const chatty = await serve((range, socket) => (partial(socket, range!), socket.write('HTTP/1.1 200 OK\r\n')));
  await assert.rejects(read(new RangeGetter(), chatty.url, 0, 5000), /more than its Content-Length/);

  const fine = await serve((range, socket) => partial(socket, range!));
  const getter = new RangeGetter();
  await assert.rejects(getter.read(fine.url, 0, 5000, () => { throw new Error('disk full'); }), /disk full/);
  assert.deepEqual((await read(getter, fine.url, 0, 10)).bytes, blob.subarray(0, 10), 'the next read opens a new connection');
  assert.equal(fine.connections(), 2);
  getter.close();
});

test('writeBatch falls back to node:http when the fast path declines: a server that ignores Range still yields exact files', async () => {
  const { url } = await serve((_range, socket) => (socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\nConnection: close\r\n\r\n`), socket.end(blob)));
  const dir = await mkdtemp(join(tmpdir(), 'pt-range-get-'));
  try {
    const file = (name: string, offset: number, size: number): FileWrite => ({
      abs: join(dir, name), path: name, offset, size, digest: `sha256:${createHash('sha256').update(blob.subarray(offset, offset + size)).digest('hex')}`,
      mode: 0o644, uid: 0, gid: 0, mtime: 1_700_000_000,
    });
    await writeBatch({ layer: 0, url: url.href, files: [file('a', 512, 1000), file('b', 2048, 200_000)], empty: [], owners: false });
    assert.deepEqual(await readFile(join(dir, 'a')), blob.subarray(512, 1512));
    assert.deepEqual(await readFile(join(dir, 'b')), blob.subarray(2048, 202_048));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
