// One of several processes writing to one catalog and one queue at once, as Node servers
// sharing a database do (test/integration/catalog.conformance.test.ts). It records the
// same manifest and blobs as its siblings, claims every blob, resolves tags, counts pulls
// and sends, claims and completes jobs, all concurrently, and prints what it won and
// every error it saw as one JSON line.
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../../core/adapters/libsql-catalog.ts';
import { LibsqlJobQueue } from '../../core/adapters/libsql-queue.ts';
import { blobKey } from '../../core/oci/keys.ts';
import { parseDigest } from '../../core/oci/reference.ts';

const [url, authToken, who, countText] = process.argv.slice(2) as [string, string, string, string];
const count = Number(countText);
const { db, close } = await openDatabase(url, authToken || undefined);
const catalog = new LibsqlCatalog(db);
const queue = new LibsqlJobQueue(db);
const errors: string[] = [];
const claimed: string[] = [];
const jobs: string[] = [];
const target = { upstream: 'docker.io', name: 'library/shared' };
const digest = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}`;
const blob = (i: number) => ({ digest: digest(i), upstream: target.upstream, name: target.name, size: i, storageKey: blobKey(parseDigest(digest(i))) });
const attempt = async (what: string, work: () => Promise<unknown>) => {
  try {
    await work();
  } catch (e) {
    const err = e as { message?: string; cause?: { code?: string } };
    errors.push(`${what}: ${err.message?.slice(0, 120)} ${err.cause?.code ?? ''}`);
  }
};

const manifest = { digest: `sha256:${'f'.repeat(64)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1, storageKey: `manifests/sha256/${'f'.repeat(64)}` };
const references = Array.from({ length: count }, (_, i) => ({ digest: digest(i), kind: 'layer' as const, position: i, blob: blob(i) }));

await Promise.all([
  attempt('recordManifest', () => catalog.recordManifest(manifest, references, Date.now())),
  ...Array.from({ length: count }, (_, i) =>
    attempt(`blob ${i}`, async () => {
      await catalog.recordBlob(blob(i), Date.now());
      const claim = await catalog.claim('blob', digest(i), who, 60_000, Date.now());
      if (claim.claimed) {
        claimed.push(digest(i));
        await catalog.blobStored(digest(i), who, i, Date.now());
      }
      await catalog.putTag(target, `t${i % 7}`, digest(i), Date.now());
      await catalog.recordPulls([{ kind: 'blob', digest: digest(i), count: 1, lastPulledAt: Date.now() }]);
    }),
  ),
  ...Array.from({ length: count }, (_, i) =>
    attempt(`job ${i}`, async () => {
      await queue.send([{ kind: 'ingest', digest: digest(i) }]);
      const job = await queue.claim(who, 60_000);
      if (job) {
        jobs.push(job.key);
        await queue.complete(job.id, who);
      }
    }),
  ),
]);
close();
console.log(JSON.stringify({ who, claimed, jobs, errors }));
