// `npm run bench` (fifth part): CI warm-up and offline import of the 200 MB image, on the
// real server process. Warm-up over the WAN stand-in (40 ms RTT, 30 MB/s per connection,
// as the cold bench): `pullthrough warm --wait` into an empty cache against a cold skopeo
// pull through the mirror, measured in the same run. Import: `pullthrough import` of the
// image's oci-archive into the filesystem store and into S3, in MB/s of archive, against
// copying the same file (filesystem) and a plain lib-storage upload of it (S3).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Upload } from '@aws-sdk/lib-storage';
import { startRegistry } from '../setup/registry.ts';
import { pushImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';
import { skopeoPull } from '../setup/clients.ts';
import { startWan } from '../setup/wan.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { buildCli } from '../../scripts/build.ts';
import { MB, cleanups, report, runBench, seconds } from './harness.ts';

const run = promisify(execFile);
const LINK = { rttMs: 40, bytesPerSecond: 30 * MB };
const PASSWORD = 'bench-warm';

await runBench(async () => {
  const s3 = await s3TestBucket('bench-warm');
  if (!s3) throw new Error('run through `npm run bench`, which starts Ceph RGW');
  const scratch = await mkdtemp(join(tmpdir(), 'pt-bench-warm-'));
  cleanups.push(() => rm(scratch, { recursive: true, force: true }));
  const registry = await startRegistry();
  cleanups.push(() => registry.stop());
  console.error('building the 200 MB image');
  await pushImage(registry, 'library/big', '1', [{ 'etc/big': 'big\n' }, { 'big.bin': randomBytes(200 * MB) }]);
  const archive = join(scratch, 'big.tar');
  await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${registry.host}/library/big:1`, `oci-archive:${archive}:1`]);
  const archiveBytes = (await stat(archive)).size;
  const [host, port] = registry.host.split(':') as [string, string];
  const wan = await startWan({ host, port: Number(port) }, LINK);
  cleanups.push(() => wan.stop());
  const cli = await buildCli();
  const auth = { PULLTHROUGH_USER: 'op', PULLTHROUGH_PASSWORD: PASSWORD };
  let n = 0;
  const mirror = async (extra: Record<string, string> = {}): Promise<Server> => {
    const server = await startServer({
      DATA_DIR: join(scratch, `data-${n++}`),
      UPSTREAMS: JSON.stringify({ 'docker.io': { url: `http://${wan.host}` } }),
      AUTH_USERS: JSON.stringify({ op: await hashPassword(PASSWORD) }),
      AUTH_RULES: 'admin to op; pull docker.io/** to anonymous',
      ...extra,
    });
    cleanups.push(() => server.stop());
    return server;
  };
  const pullthrough = (server: Server, args: string[]) => run(process.execPath, [cli, ...args, '--server', server.url], { env: { ...process.env, ...auth }, maxBuffer: 16 * MB });

  console.error('warm-up against a cold pull, over the link');
  const cold = await mirror();
  const pull = await seconds(() => skopeoPull(cold.host, 'library/big:1', join(scratch, 'cold-pull')));
  await rm(join(scratch, 'cold-pull'), { recursive: true, force: true });
  const warming = await mirror();
  const warm = await seconds(() => pullthrough(warming, ['warm', 'library/big:1', '--wait']));
  const after = await seconds(() => skopeoPull(warming.host, 'library/big:1', join(scratch, 'warm-pull')));
  await rm(join(scratch, 'warm-pull'), { recursive: true, force: true });
  const again = await seconds(() => pullthrough(warming, ['warm', 'library/big:1', '--wait']));
  report('cold pull of the 200 MB image through the mirror (skopeo, over the link)', `${pull.toFixed(2)} s`);
  report('`pullthrough warm --wait` of it into an empty cache', `${warm.toFixed(2)} s = ${(warm / pull).toFixed(2)}× the cold pull`, 'the same bytes over the same link');
  report('then a pull of the warmed image', `${after.toFixed(2)} s`);
  report('warming it again', `${again.toFixed(2)} s`, 'no bytes moved');

  console.error('import of the oci-archive');
  const copy = await seconds(() => copyFile(archive, join(scratch, 'copy.tar')));
  await rm(join(scratch, 'copy.tar'), { force: true });
  const fsServer = await mirror();
  const fsImport = await seconds(() => pullthrough(fsServer, ['import', archive, '--as', 'library/big:1']));
  // A fresh RGW takes its first large upload at a third of its speed: one unmeasured upload first.
  const plainUpload = (key: string) =>
    new Upload({ client: s3.client, params: { Bucket: s3.bucket, Key: key, Body: createReadStream(archive) }, partSize: 5 * MB, queueSize: 2 }).done(); // the server's default parts
  await plainUpload('bench/warm-up.tar');
  const upload = await seconds(() => plainUpload('bench/plain-upload.tar'));
  const s3Server = await mirror(s3ServerEnv(s3.bucket));
  const s3Import = await seconds(() => pullthrough(s3Server, ['import', archive, '--as', 'library/big:1']));
  const rate = (s: number) => `${(archiveBytes / MB / s).toFixed(1)} MB/s`;
  report(`import of a ${(archiveBytes / MB).toFixed(0)} MB oci-archive, filesystem store`, `${rate(fsImport)} (${fsImport.toFixed(2)} s)`, `cp of the file: ${rate(copy)}`);
  report('import of it into S3 (Ceph RGW)', `${rate(s3Import)} (${s3Import.toFixed(2)} s)`, `plain lib-storage upload of the file, same parts: ${rate(upload)}`);
});
