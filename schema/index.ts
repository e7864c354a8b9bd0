export * from './repositories.ts';
export * from './tags.ts';
export * from './tag-lists.ts';
export * from './manifests.ts';
export * from './blobs.ts';
export * from './manifest-blobs.ts';
export * from './jobs.ts';
export * from './layers.ts';
