// One of several processes draining one libSQL job queue at once
// (test/integration/job-queue.conformance.test.ts): claims and completes jobs until none
// is left, then prints the keys it got and any error as one JSON line.
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlJobQueue } from '../../core/adapters/libsql-queue.ts';

const [url, authToken, who] = process.argv.slice(2) as [string, string, string];
const { db, close } = await openDatabase(url, authToken || undefined);
const queue = new LibsqlJobQueue(db);
const keys: string[] = [];
const errors: string[] = [];
await Promise.all(
  Array.from({ length: 4 }, async (_, n) => {
    const owner = `${who}-${n}`;
    for (;;) {
      try {
        const job = await queue.claim(owner, 60_000);
        if (!job) return;
        keys.push(job.key);
        await queue.ackerFor(job, owner).done();
      } catch (e) {
        errors.push(String(e).slice(0, 200));
        if (errors.length > 20) return;
      }
    }
  }),
);
close();
console.log(JSON.stringify({ who, keys, errors }));
