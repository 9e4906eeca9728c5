// Validates rendered Kubernetes objects against the API's schemas: built-in kinds through
// kubernetes-models (the OpenAPI schemas of Kubernetes itself), ServiceMonitor through the
// prometheus-operator models, and the two SPIRE CRDs we emit through zod schemas of the
// spire-controller-manager fields we use (no maintained npm models exist for them).

import { z } from 'zod';

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: unknown) => Validatable;

const labelMap = z.record(z.string(), z.string());
const selector = z.strictObject({
  matchLabels: labelMap.optional(),
  matchExpressions: z.array(z.strictObject({ key: z.string(), operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']), values: z.array(z.string()).optional() })).optional(),
});
// A DNS-1123 subdomain, as the API server requires of these objects' names.
const objectName = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'a DNS-1123 subdomain: lower-case alphanumerics, - and .');
const meta = z.object({ name: objectName, namespace: z.string().optional(), labels: labelMap.optional(), annotations: labelMap.optional() });
const trustDomain = z.string().regex(/^[a-z0-9._-]+$/, 'a trust domain name without spiffe://');

const clusterSpiffeId = z.strictObject({
  apiVersion: z.literal('spire.spiffe.io/v1alpha1'),
  kind: z.literal('ClusterSPIFFEID'),
  metadata: meta.refine((m) => m.namespace === undefined, 'ClusterSPIFFEID is cluster-scoped: no namespace'),
  spec: z.strictObject({
    className: z.string().optional(),
    spiffeIDTemplate: z.string().startsWith('spiffe://{{ .TrustDomain }}/'),
    podSelector: selector.optional(),
    namespaceSelector: selector.optional(),
    workloadSelectorTemplates: z.array(z.string()).optional(),
    dnsNameTemplates: z.array(z.string()).optional(),
    federatesWith: z.array(trustDomain).optional(),
    ttl: z.string().optional(),
    jwtTtl: z.string().optional(),
    hint: z.string().optional(),
    admin: z.boolean().optional(),
    downstream: z.boolean().optional(),
    autoPopulateDNSNames: z.boolean().optional(),
    fallback: z.boolean().optional(),
  }),
});

const clusterFederatedTrustDomain = z.strictObject({
  apiVersion: z.literal('spire.spiffe.io/v1alpha1'),
  kind: z.literal('ClusterFederatedTrustDomain'),
  metadata: meta.refine((m) => m.namespace === undefined, 'ClusterFederatedTrustDomain is cluster-scoped: no namespace'),
  spec: z.strictObject({
    className: z.string().optional(),
    trustDomain,
    bundleEndpointURL: z.url({ protocol: /^https$/ }),
    bundleEndpointProfile: z.discriminatedUnion('type', [
      z.strictObject({ type: z.literal('https_spiffe'), endpointSPIFFEID: z.string().regex(/^spiffe:\/\/[a-z0-9._-]+\/.+/) }),
      z.strictObject({ type: z.literal('https_web') }),
    ]),
    trustDomainBundle: z.string().optional(),
  }),
});

/** A ClusterSPIFFEID as validateK8sObject accepts it. */
export type ClusterSPIFFEID = z.infer<typeof clusterSpiffeId>;
/** A ClusterFederatedTrustDomain as validateK8sObject accepts it. */
export type ClusterFederatedTrustDomain = z.infer<typeof clusterFederatedTrustDomain>;

async function modelFor(apiVersion: string, kind: string): Promise<ModelClass | undefined> {
  const modules: Record<string, () => Promise<Record<string, unknown>>> = {
    v1: () => import('kubernetes-models/v1'),
    'apps/v1': () => import('kubernetes-models/apps/v1'),
    'policy/v1': () => import('kubernetes-models/policy/v1'),
    'batch/v1': () => import('kubernetes-models/batch/v1'),
    'rbac.authorization.k8s.io/v1': () => import('kubernetes-models/rbac.authorization.k8s.io/v1'),
    'monitoring.coreos.com/v1': () => import('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'),
  };
  const load = modules[apiVersion];
  if (!load) return undefined;
  return (await load())[kind] as ModelClass | undefined;
}

/** Throws with the object's kind/name and every problem when `obj` is not a valid object of its kind. */
export async function validateK8sObject(obj: { apiVersion?: string; kind?: string; metadata?: { name?: string } }): Promise<void> {
  const what = `${obj.kind ?? '?'} ${obj.metadata?.name ?? '?'}`;
  if (obj.kind === 'ClusterSPIFFEID' || obj.kind === 'ClusterFederatedTrustDomain') {
    const schema = obj.kind === 'ClusterSPIFFEID' ? clusterSpiffeId : clusterFederatedTrustDomain;
    const r = schema.safeParse(obj);
    if (!r.success) throw new Error(`${what}: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    return;
  }
  const Model = await modelFor(obj.apiVersion ?? '', obj.kind ?? '');
  if (!Model) throw new Error(`${what}: no schema for ${obj.apiVersion}/${obj.kind}`);
  try {
    new Model(obj).validate();
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
  }
}
