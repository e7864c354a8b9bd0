import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../../core/adapters/s3-store.ts';

/** A client and a fresh bucket on the Ceph RGW that test/run.sh started, or undefined outside it. */
export async function s3TestBucket(prefix: string): Promise<{ client: S3Client; bucket: string } | undefined> {
  if (!process.env.S3_TEST_ENDPOINT) {
    if (process.env.CI) throw new Error('S3_TEST_ENDPOINT is not set: run the suite through `npm test`, which starts Ceph RGW');
    return undefined;
  }
  const client = createS3Client({
    endpoint: process.env.S3_TEST_ENDPOINT,
    region: 'us-east-1',
    accessKeyId: process.env.S3_TEST_ACCESS_KEY_ID,
    secretAccessKey: process.env.S3_TEST_SECRET_ACCESS_KEY,
    forcePathStyle: true,
  });
  const bucket = `${prefix}-${Date.now()}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  return { client, bucket };
}

/** The server's S3 variables for a bucket on the test RGW. */
export const s3ServerEnv = (bucket: string): Record<string, string> => ({
  S3_ENDPOINT: process.env.S3_TEST_ENDPOINT!,
  S3_BUCKET: bucket,
  S3_ACCESS_KEY_ID: process.env.S3_TEST_ACCESS_KEY_ID!,
  S3_SECRET_ACCESS_KEY: process.env.S3_TEST_SECRET_ACCESS_KEY!,
  S3_FORCE_PATH_STYLE: 'true',
});
