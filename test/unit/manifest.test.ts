import { test } from 'node:test';
import assert from 'node:assert/strict';
import { accepts, parseAccept, parseManifest, selectPlatform, MediaType, type Platform } from '../../core/oci/manifest.ts';

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const d = (digest: string, platform?: Platform) => ({ mediaType: MediaType.OciManifest, digest, size: 1, platform });

test('image manifests and indexes parse into descriptors', () => {
  const image = parseManifest(enc({ schemaVersion: 2, mediaType: MediaType.DockerManifest, config: d('sha256:c'), layers: [d('sha256:l')] }), undefined);
  assert.equal(image.kind, 'image');
  assert.equal(image.mediaType, MediaType.DockerManifest);
  const index = parseManifest(enc({ schemaVersion: 2, manifests: [d('sha256:a')] }), `${MediaType.OciIndex}; charset=utf-8`);
  assert.deepEqual(index, { kind: 'index', mediaType: MediaType.OciIndex, manifests: [{ ...d('sha256:a'), annotations: undefined }] });
});

test('junk is MANIFEST_INVALID and schema 1 is UNSUPPORTED', () => {
  assert.throws(() => parseManifest(new TextEncoder().encode('{'), undefined), { code: 'MANIFEST_INVALID' });
  assert.throws(() => parseManifest(enc({ layers: [{ digest: 'x', size: -1 }], config: {} }), undefined), { code: 'MANIFEST_INVALID' });
  assert.throws(() => parseManifest(enc({ schemaVersion: 1, fsLayers: [] }), undefined), { code: 'UNSUPPORTED' });
});

test('Accept negotiation honours lists, wildcards and q=0', () => {
  const accepted = parseAccept([`${MediaType.DockerManifest}, ${MediaType.OciIndex};q=0`, MediaType.OciManifest]);
  assert.deepEqual(accepted, [MediaType.DockerManifest, MediaType.OciManifest]);
  assert.equal(accepts(accepted, MediaType.OciIndex), false);
  assert.equal(accepts([], MediaType.OciIndex), true);
  assert.equal(accepts(['*/*'], MediaType.OciIndex), true);
});

test('platform selection matches os, architecture and the arm64 v8 default', () => {
  const list = [d('sha256:amd', { os: 'linux', architecture: 'amd64' }), d('sha256:arm', { os: 'linux', architecture: 'arm64' })];
  assert.equal(selectPlatform(list, { os: 'linux', architecture: 'arm64', variant: 'v8' })?.digest, 'sha256:arm');
  assert.equal(selectPlatform(list, { os: 'linux', architecture: 'amd64' })?.digest, 'sha256:amd');
  assert.equal(selectPlatform(list, { os: 'windows', architecture: 'amd64' }), undefined);
});

test('platforms parse as os/architecture[/variant]; anything else is PLATFORM_INVALID', async () => {
  const { parsePlatform } = await import('../../core/oci/manifest.ts');
  assert.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
  assert.deepEqual(parsePlatform('linux/arm64/v8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  for (const bad of ['linux', 'linux/', 'linux/amd64/v8/x', 'linux/am d64']) assert.throws(() => parsePlatform(bad), (e: any) => e.code === 'PLATFORM_INVALID', bad);
});
