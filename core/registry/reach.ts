import { selectUpstream, upstreamError } from '../ports/upstream.ts';
import type { OciError } from '../oci/errors.ts';
import type { RepositoryTarget } from '../oci/reference.ts';
import type { RegistryDeps } from './blobs.ts';
import { MANIFEST_ACCEPT } from './tags.ts';

/**
 * Asks the upstream whether the repository has a manifest or blob we hold through another
 * repository (a HEAD under this one, no body). A yes is recorded (Catalog.recordInRepository),
 * so it is asked once. Throws `notFound` for a no, and what the upstream's failure maps to
 * otherwise: an upstream that cannot answer is never a yes.
 */
export async function confirmInRepository(deps: RegistryDeps, target: RepositoryTarget, kind: 'manifests' | 'blobs', digest: string, notFound: OciError): Promise<void> {
  const res = await selectUpstream(deps.upstreams, target.upstream).request('HEAD', `/v2/${target.name}/${kind}/${digest}`, target.name, kind === 'manifests' ? MANIFEST_ACCEPT : {});
  await res.body?.cancel();
  if (!res.ok) throw await upstreamError(res, target.upstream, notFound);
  await deps.catalog.recordInRepository(target, digest, deps.clock());
}
