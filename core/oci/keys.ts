import type { Digest } from './reference.ts';

// The bucket keys: a public contract (sandboxes read them directly), here and nowhere
// else. An object exists under one of these only once verified; anything temporary a
// driver writes lives elsewhere.

/** A blob, byte for byte as the upstream served it: `blobs/<algorithm>/<hex>`. */
export const blobKey = (digest: Digest): string => `blobs/${digest.algorithm}/${digest.hex}`;
/** A manifest, byte for byte: `manifests/<algorithm>/<hex>`. */
export const manifestKey = (digest: Digest): string => `manifests/${digest.algorithm}/${digest.hex}`;
/** The uncompressed layer, whose sha256 is its diff_id: `layers/sha256/<hex>/layer.tar`. */
export const layerTarKey = (diffId: Digest): string => `layers/${diffId.algorithm}/${diffId.hex}/layer.tar`;
/** That tar's table of contents, written after it: `layers/sha256/<hex>/toc.json`. */
export const layerTocKey = (diffId: Digest): string => `layers/${diffId.algorithm}/${diffId.hex}/toc.json`;
