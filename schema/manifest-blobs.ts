import { sqliteTable, text, primaryKey, integer, index } from 'drizzle-orm/sqlite-core';

/** What a manifest references: its config and layers, or an index's child manifests. */
export const manifestBlobs = sqliteTable(
  'manifest_blobs',
  {
    manifestDigest: text('manifest_digest').notNull(),
    blobDigest: text('blob_digest').notNull(),
    kind: text('kind', { enum: ['config', 'layer', 'manifest'] }).notNull(),
    position: integer('position').notNull(),
  },
  (t) => [primaryKey({ columns: [t.manifestDigest, t.blobDigest] }), index('manifest_blobs_blob').on(t.blobDigest)],
);

export type ManifestBlob = typeof manifestBlobs.$inferSelect;
