// slim-node configuration: the reference deployment's YAML parses into the expected NodeConfig,
// and every problem becomes one line naming the key. Unit tests only: no processes.

import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../common/config-file.js';
import { scratchDir } from '../harness/node-config.js';
import { loadNodeConfig, parseNodeConfig, type NodeConfig } from '../node/config.js';
import { SEED } from './support/seed-node-config.js';

/** The reference deployment's node config, verbatim. */

const ENV = { SLIM_SVC_ID: 'slim-0', MY_POD_IP: '10.1.0.4' };
const SOCKET = 'unix:/tmp/spire-agent/public/api.sock';

/** The ConfigError message thrown for `text`, split into lines. */
function problems(text: string, env: NodeJS.ProcessEnv = ENV, baseDir = '.'): string[] {
  let thrown: unknown;
  try {
    parseNodeConfig(text, env, baseDir);
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'expected the config to be rejected').toBeInstanceOf(ConfigError);
  return (thrown as ConfigError).message.split('\n');
}

/** A minimal valid config with `dataplane` (YAML, indented for its place) spliced in. */
function withDataplane(dataplane: string, extra = ''): string {
  return `${extra}services:
  slim/0:
    node_id: n1
    dataplane:
${dataplane.replace(/^/gm, '      ')}
`;
}

describe('the reference deployment config', () => {
  let cfg: NodeConfig;
  beforeAll(() => {
    cfg = parseNodeConfig(SEED, ENV);
  });

  it('takes node id and group from the service', () => {
    expect(cfg.serviceId).toBe('slim/0');
    expect(cfg.nodeId).toBe('slim-0');
    expect(cfg.group).toBe('cluster-a.example');
    expect(cfg.logLevel).toBe('debug');
  });

  it('appends the server port to a bare pod IP and keeps a full external endpoint', () => {
    expect(cfg.servers).toHaveLength(1);
    const s = cfg.servers[0]!;
    expect(s.endpoint).toEqual({ host: '0.0.0.0', port: 46357 });
    expect(s.localEndpoint).toBe('10.1.0.4:46357');
    expect(s.externalEndpoint).toBe('slim.cluster-a.example:46357');
  });

  it('keeps the server SPIRE source and CA trust domains', () => {
    expect(cfg.servers[0]!.tls).toEqual({
      insecure: false,
      skipVerify: false,
      cert: { type: 'spire', socketPath: SOCKET },
      ca: { type: 'spire', socketPath: SOCKET, trustDomains: ['cluster-b.example'] },
    });
  });

  it('keeps the controller client with its URL and SPIRE trust domain', () => {
    expect(cfg.controllerClients).toHaveLength(1);
    const c = cfg.controllerClients[0]!;
    expect(c.url).toBe('https://slim-control.admin.example:50052');
    expect(c.host).toBe('slim-control.admin.example');
    expect(c.port).toBe(50052);
    expect(c.tls.insecure).toBe(false);
    expect(c.tls.cert).toEqual({ type: 'spire', socketPath: SOCKET });
    expect(c.tls.ca).toEqual({ type: 'spire', socketPath: SOCKET, trustDomains: ['admin.example'] });
    expect(cfg.clients).toEqual([]);
  });

  it('reads the drain timeout and fills in defaults', () => {
    expect(cfg.drainTimeoutMs).toBe(10_000);
    expect(cfg.maxMessageSize).toBe(4 * 1024 * 1024);
    expect(cfg.queueLimit).toBe(8 * 1024 * 1024);
    expect(cfg.defaultTtl).toBe(8);
    expect(cfg.ops).toEqual({ host: '0.0.0.0', port: 9090 });
  });

  it('loads the same from a file', () => {
    const dir = scratchDir('slim-config-test');
    try {
      const file = join(dir, 'node.yaml');
      writeFileSync(file, SEED);
      expect(loadNodeConfig(file, ENV)).toEqual(cfg);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('references', () => {
  let dir: string;
  beforeAll(() => {
    dir = scratchDir('slim-config-refs');
    mkdirSync(join(dir, 'secrets'));
    writeFileSync(join(dir, 'secrets', 'node-id'), 'node-from-file\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('names the key of a missing environment variable', () => {
    expect(problems(SEED, { MY_POD_IP: '10.1.0.4' })).toEqual(['node config: services.slim/0.node_id: environment variable SLIM_SVC_ID is not set']);
  });

  it('names the key of a missing env var deep inside a list', () => {
    expect(problems(SEED, { SLIM_SVC_ID: 'x' })).toEqual([
      'node config: services.slim/0.dataplane.servers[0].metadata.local_endpoint: environment variable MY_POD_IP is not set',
    ]);
  });

  // The operator should learn every missing variable at once, not one per restart.
  it('reports every unset environment variable, one line each', () => {
    expect(problems(SEED, {})).toEqual([
      'node config: services.slim/0.node_id: environment variable SLIM_SVC_ID is not set',
      'node config: services.slim/0.dataplane.servers[0].metadata.local_endpoint: environment variable MY_POD_IP is not set',
    ]);
  });

  it('uses ${env:X:-fallback} when X is unset or empty, and X when set', () => {
    const text = 'services:\n  slim/0:\n    node_id: ${env:NODE_ID:-fallback-node}\n    group_name: g-${env:GROUP:-none}-x\n';
    expect(parseNodeConfig(text, {}).nodeId).toBe('fallback-node');
    expect(parseNodeConfig(text, { NODE_ID: '' }).nodeId).toBe('fallback-node');
    expect(parseNodeConfig(text, {}).group).toBe('g-none-x');
    const set = parseNodeConfig(text, { NODE_ID: 'from-env', GROUP: 'a' });
    expect(set.nodeId).toBe('from-env');
    expect(set.group).toBe('g-a-x');
  });

  it('reads ${file:PATH} relative to the base directory, without the trailing newline', () => {
    const text = 'services:\n  slim/0:\n    node_id: ${file:secrets/node-id}\n';
    expect(parseNodeConfig(text, {}, dir).nodeId).toBe('node-from-file');
    const abs = `services:\n  slim/0:\n    node_id: \${file:${join(dir, 'secrets', 'node-id')}}\n`;
    expect(parseNodeConfig(abs, {}, '/nonexistent').nodeId).toBe('node-from-file');
  });

  it('reads ${file:PATH} relative to the config file when loading a file', () => {
    const file = join(dir, 'node.yaml');
    writeFileSync(file, 'services:\n  slim/0:\n    node_id: ${file:secrets/node-id}\n');
    expect(loadNodeConfig(file, {}).nodeId).toBe('node-from-file');
  });

  it('names the key and the path of a missing ${file:...}', () => {
    const text = 'services:\n  slim/0:\n    node_id: ${file:secrets/missing}\n';
    expect(problems(text, {}, dir)).toEqual([`node config: services.slim/0.node_id: cannot read ${dir}/secrets/missing: ENOENT`]);
  });
});

describe('problems name their key', () => {
  it('an unknown key (typo endpont), and the endpoint it leaves missing', () => {
    const lines = problems(withDataplane('servers:\n  - endpont: "0.0.0.0:46357"'));
    expect(lines).toContain('node config: services.slim/0.dataplane.servers[0].endpont: not a known key');
    expect(lines).toContain('node config: services.slim/0.dataplane.servers[0].endpoint is missing');
    expect(lines).toHaveLength(2);
  });

  it('an unknown top-level key', () => {
    expect(problems(`tracin:\n  log_level: debug\n${withDataplane('servers: []')}`)).toEqual(['node config: tracin: not a known key']);
  });

  it('a missing endpoint', () => {
    expect(problems(withDataplane('servers:\n  - tls:\n      insecure: true'))).toEqual([
      'node config: services.slim/0.dataplane.servers[0].endpoint is missing',
    ]);
  });

  it('an out-of-range port', () => {
    const lines = problems(withDataplane('servers:\n  - endpoint: "0.0.0.0:99999"'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: services\.slim\/0\.dataplane\.servers\[0\]\.endpoint: "0\.0\.0\.0:99999" is not host:port/);
  });

  it('an endpoint without a port', () => {
    const lines = problems(withDataplane('servers:\n  - endpoint: nohost'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: services\.slim\/0\.dataplane\.servers\[0\]\.endpoint: "nohost" is not host:port/);
  });

  it('a client endpoint that is not an endpoint', () => {
    const lines = problems(withDataplane('clients:\n  - endpoint: "http://nohost"'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: services\.slim\/0\.dataplane\.clients\[0\]\.endpoint: "http:\/\/nohost" is not an endpoint/);
  });

  it('a bad duration', () => {
    const lines = problems(SEED.replace('drain_timeout: 10s', 'drain_timeout: 10 parsecs'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: runtime\.drain_timeout: "10 parsecs" is not a duration/);
  });

  it('a bad size', () => {
    const lines = problems(withDataplane('max_message_size: 4 megs'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: services\.slim\/0\.dataplane\.max_message_size: "4 megs" is not a positive size/);
  });

  it('sizes and durations in their accepted spellings', () => {
    const cfg = parseNodeConfig(withDataplane('max_message_size: 512KiB\nconnection_queue_limit: 1048576', 'runtime:\n  drain_timeout: 500ms\n'), {});
    expect(cfg.maxMessageSize).toBe(512 * 1024);
    expect(cfg.queueLimit).toBe(1048576);
    expect(cfg.drainTimeoutMs).toBe(500);
    expect(parseNodeConfig(withDataplane('servers: []', 'runtime:\n  drain_timeout: 1m\n'), {}).drainTimeoutMs).toBe(60_000);
  });

  it('two services in one process', () => {
    const text = 'services:\n  slim/0:\n    node_id: a\n  slim/1:\n    node_id: b\n';
    expect(problems(text)).toEqual(['node config: services: one slim service per process, found slim/0, slim/1']);
  });

  it('a service id that is not slim/N', () => {
    expect(problems('services:\n  gateway:\n    node_id: a\n')).toEqual(['node config: services.gateway: service ids look like slim/0']);
  });

  it('no services at all', () => {
    expect(problems('services: {}\n')).toEqual(['node config: services: needs one service, e.g. "slim/0"']);
    expect(problems('tracing:\n  log_level: info\n')).toEqual(['node config: services is missing']);
  });

  it('an empty file', () => {
    expect(problems('')).toEqual(['node config: the file is empty']);
    expect(problems('# only a comment\n')).toEqual(['node config: the file is empty']);
  });

  it('invalid YAML, with the line number', () => {
    const lines = problems('services:\n  slim/0:\n    node_id: a\n    dataplane:\n      servers: [ {endpoint: "0.0.0.0:1"\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: invalid YAML at line \d+, column \d+: /);
    const bad = problems('services:\n  slim/0:\n    node_id: a\n    group_name: b: c\n');
    expect(bad).toHaveLength(1);
    expect(bad[0]).toMatch(/^node config: invalid YAML at line 4, column 17: /);
    const tab = problems('services:\n  slim/0:\n    node_id: a\n\tgroup_name: b\n');
    expect(tab[0]).toMatch(/^node config: invalid YAML at line 4, column 1: .*[Tt]ab/);
  });

  it('an http:// client endpoint with TLS sources configured', () => {
    const lines = problems(withDataplane('clients:\n  - endpoint: http://10.0.0.5:46357\n    tls:\n      source:\n        type: file\n        cert: /c.pem\n        key: /k.pem'));
    expect(lines).toEqual(['node config: services.slim/0.dataplane.clients[0].endpoint: http:// is plaintext but TLS sources are configured; use https://']);
    const ca = problems(withDataplane('clients:\n  - endpoint: http://10.0.0.5:46357\n    tls:\n      ca_source:\n        type: file\n        path: /ca.pem'));
    expect(ca).toEqual(['node config: services.slim/0.dataplane.clients[0].endpoint: http:// is plaintext but TLS sources are configured; use https://']);
    const ctl = problems(SEED.replace('https://slim-control', 'http://slim-control'));
    expect(ctl).toEqual(['node config: services.slim/0.controller.clients[0].endpoint: http:// is plaintext but TLS sources are configured; use https://']);
  });

  // ca_file means the same as ca_source: a CA on an http:// endpoint would be silently ignored.
  it('an http:// client endpoint with the flat ca_file spelling', () => {
    expect(problems(withDataplane('clients:\n  - endpoint: http://10.0.0.5:46357\n    tls:\n      ca_file: /ca.pem'))).toEqual([
      'node config: services.slim/0.dataplane.clients[0].endpoint: http:// is plaintext but TLS sources are configured; use https://',
    ]);
  });

  it('an https:// client endpoint with tls.insecure: true', () => {
    expect(problems(withDataplane('clients:\n  - endpoint: https://10.0.0.5:46357\n    tls:\n      insecure: true'))).toEqual([
      'node config: services.slim/0.dataplane.clients[0].tls.insecure: https:// endpoint with tls.insecure: true; use http:// for plaintext',
    ]);
  });

  it('cert_file without key_file', () => {
    expect(problems(withDataplane('servers:\n  - endpoint: "0.0.0.0:46357"\n    tls:\n      cert_file: /c.pem'))).toEqual([
      'node config: services.slim/0.dataplane.servers[0].tls: cert_file and key_file go together',
    ]);
  });

  it('a source together with cert_file/key_file', () => {
    const lines = problems(
      withDataplane('servers:\n  - endpoint: "0.0.0.0:46357"\n    tls:\n      cert_file: /c.pem\n      key_file: /k.pem\n      source:\n        type: file\n        cert: /c2.pem\n        key: /k2.pem'),
    );
    expect(lines).toEqual(['node config: services.slim/0.dataplane.servers[0].tls: set either source or cert_file/key_file, not both']);
  });

  it('a ca_source together with ca_file', () => {
    expect(problems(withDataplane('servers:\n  - endpoint: "0.0.0.0:46357"\n    tls:\n      ca_file: /ca.pem\n      ca_source:\n        type: file\n        path: /ca2.pem'))).toEqual([
      'node config: services.slim/0.dataplane.servers[0].tls: set either ca_source or ca_file, not both',
    ]);
  });

  it('an unknown source type', () => {
    const lines = problems(withDataplane('servers:\n  - endpoint: "0.0.0.0:46357"\n    tls:\n      source:\n        type: vault'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: services\.slim\/0\.dataplane\.servers\[0\]\.tls\.source(\.type)?: /);
  });

  it('an empty node id or group', () => {
    expect(problems('services:\n  slim/0:\n    node_id: ""\n    group_name: ""\n')).toEqual([
      'node config: services.slim/0.node_id: must not be empty',
      'node config: services.slim/0.group_name: must not be empty',
    ]);
  });

  it('a log level that does not exist', () => {
    const lines = problems(`tracing:\n  log_level: verbose\n${withDataplane('servers: []')}`);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: tracing\.log_level: /);
  });

  // A key that is present with the wrong type must not be reported as missing.
  it('a value of the wrong type is not reported as missing', () => {
    const lines = problems('services:\n  slim/0:\n    node_id: 42\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: services\.slim\/0\.node_id: /);
    expect(lines[0]).not.toContain('is missing');
    const ttl = problems(withDataplane('default_ttl: eight'));
    expect(ttl[0]).toMatch(/^node config: services\.slim\/0\.dataplane\.default_ttl: /);
    expect(ttl[0]).not.toContain('is missing');
  });

  it('reports every problem, one line each', () => {
    const text = `runtime:
  drain_timeout: 10 parsecs
services:
  slim/0:
    node_id: n1
    dataplane:
      max_message_size: huge
      servers:
        - endpoint: "0.0.0.0:99999"
        - endpont: "0.0.0.0:1"
      clients:
        - endpoint: https://10.0.0.5:46357
          tls:
            insecure: true
`;
    const lines = problems(text);
    for (const l of lines) expect(l).toMatch(/^node config: \S/);
    const keys = [
      'runtime.drain_timeout',
      'services.slim/0.dataplane.max_message_size',
      'services.slim/0.dataplane.servers[0].endpoint',
      'services.slim/0.dataplane.servers[1].endpont',
      'services.slim/0.dataplane.servers[1].endpoint',
      'services.slim/0.dataplane.clients[0].tls.insecure',
    ];
    for (const k of keys) expect(lines.filter((l) => l.startsWith(`node config: ${k}`)), k).toHaveLength(1);
    expect(lines).toHaveLength(keys.length);
  });
});

describe('spellings and defaults', () => {
  it('maps the flat cert_file/key_file/ca_file spelling to file sources', () => {
    const cfg = parseNodeConfig(
      withDataplane(
        'servers:\n  - endpoint: "127.0.0.1:46357"\n    tls:\n      cert_file: /certs/tls.crt\n      key_file: /certs/tls.key\n      ca_file: /certs/ca.crt\n' +
          'clients:\n  - endpoint: https://peer.example:46357\n    tls:\n      cert_file: /certs/c.crt\n      key_file: /certs/c.key\n      ca_file: /certs/ca.crt',
      ),
      {},
    );
    expect(cfg.servers[0]!.tls).toEqual({
      insecure: false,
      skipVerify: false,
      // `flat` remembers the spelling so errors name cert_file/key_file/ca_file, as written.
      cert: { type: 'file', cert: '/certs/tls.crt', key: '/certs/tls.key', flat: true },
      ca: { type: 'file', path: '/certs/ca.crt', flat: true },
    });
    expect(cfg.clients[0]!.tls.cert).toEqual({ type: 'file', cert: '/certs/c.crt', key: '/certs/c.key', flat: true });
    expect(cfg.clients[0]!.tls.ca).toEqual({ type: 'file', path: '/certs/ca.crt', flat: true });
  });

  it('maps the nested file source spelling the same way', () => {
    const cfg = parseNodeConfig(
      withDataplane('servers:\n  - endpoint: "127.0.0.1:46357"\n    tls:\n      source:\n        type: file\n        cert: /certs/tls.crt\n        key: /certs/tls.key\n      ca_source:\n        type: file\n        path: /certs/ca.crt'),
      {},
    );
    expect(cfg.servers[0]!.tls.cert).toEqual({ type: 'file', cert: '/certs/tls.crt', key: '/certs/tls.key' });
    expect(cfg.servers[0]!.tls.ca).toEqual({ type: 'file', path: '/certs/ca.crt' });
  });

  it('makes a client endpoint without a scheme https, unless tls.insecure', () => {
    const cfg = parseNodeConfig(
      withDataplane('clients:\n  - endpoint: 10.0.0.5:46357\n  - endpoint: 10.0.0.6:46357\n    tls:\n      insecure: true\n  - endpoint: http://10.0.0.7:46357\n  - endpoint: "[fd00::7]:46357"'),
      {},
    );
    expect(cfg.clients.map((c) => c.url)).toEqual(['https://10.0.0.5:46357', 'http://10.0.0.6:46357', 'http://10.0.0.7:46357', 'https://[fd00::7]:46357']);
    expect(cfg.clients.map((c) => c.tls.insecure)).toEqual([false, true, true, false]);
    expect(cfg.clients[3]!.host).toBe('fd00::7');
    expect(cfg.clients[0]).toMatchObject({ host: '10.0.0.5', port: 46357, connectTimeoutMs: 10_000, keepaliveIntervalMs: 10_000, keepaliveTimeoutMs: 5_000 });
  });

  it('disables the ops endpoint with observability.endpoint: ""', () => {
    expect(parseNodeConfig(withDataplane('servers: []', 'observability:\n  endpoint: ""\n'), {}).ops).toBeUndefined();
    expect(parseNodeConfig(withDataplane('servers: []', 'observability:\n  endpoint: 127.0.0.1:9464\n'), {}).ops).toEqual({ host: '127.0.0.1', port: 9464 });
  });

  it('names the key of a bad observability endpoint', () => {
    const lines = problems(withDataplane('servers: []', 'observability:\n  endpoint: nohost\n'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^node config: observability\.endpoint: /);
  });

  it('keeps a full local_endpoint and leaves unset ones undefined', () => {
    const cfg = parseNodeConfig(
      withDataplane('servers:\n  - endpoint: "0.0.0.0:46357"\n    metadata:\n      local_endpoint: "10.1.0.4:5000"\n  - endpoint: "0.0.0.0:46358"'),
      {},
    );
    expect(cfg.servers[0]!.localEndpoint).toBe('10.1.0.4:5000');
    expect(cfg.servers[1]!.localEndpoint).toBeUndefined();
    expect(cfg.servers[1]!.externalEndpoint).toBeUndefined();
    expect(cfg.servers[1]!.tls).toEqual({ insecure: false, skipVerify: false });
  });

  // MY_POD_IP on an IPv6 or dual-stack cluster is a bare address: it needs brackets before the port.
  it('brackets a bare IPv6 pod IP when appending the server port', () => {
    const cfg = parseNodeConfig(SEED, { ...ENV, MY_POD_IP: 'fd00::4' });
    expect(cfg.servers[0]!.localEndpoint).toBe('[fd00::4]:46357');
  });
});

describe('the example configs', () => {
  it('load through the validator (SPIFFE ones included)', () => {
    const a = loadNodeConfig(join(import.meta.dirname, '../examples/node-a-spire.yaml'), {});
    expect(a.servers[0]!.tls).toMatchObject({
      cert: { type: 'spire', socketPath: 'unix:/tmp/slim-dev-issuer/cluster-a/slim-0.sock' },
      ca: { type: 'spire', trustDomains: ['cluster-b.example'] },
    });
    const b = loadNodeConfig(join(import.meta.dirname, '../examples/node-b-spire.yaml'), {});
    expect(b.clients[0]!.tls.ca).toMatchObject({ type: 'spire', trustDomains: ['cluster-a.example'] });
    for (const f of ['node-a.yaml', 'node-b.yaml', 'node-mtls.yaml']) expect(() => loadNodeConfig(join(import.meta.dirname, '../examples', f), { SLIM_TLS_DIR: '/tls' })).not.toThrow();
    for (const [f, td] of [['node-a-controlled.yaml', 'cluster-a.example'], ['node-b-controlled.yaml', 'cluster-b.example']] as const) {
      const c = loadNodeConfig(join(import.meta.dirname, '../examples', f), {});
      expect(c.group).toBe(td);
      expect(c.clients).toEqual([]);
      expect(c.controllerClients[0]).toMatchObject({ url: 'https://127.0.0.1:50052', tls: { ca: { type: 'spire', trustDomains: ['admin.example'] } } });
    }
  });

  it('names a bad trust domain by its key', () => {
    const doc = {
      services: {
        'slim/0': {
          node_id: 'n',
          dataplane: {
            servers: [{ endpoint: '0.0.0.0:1', tls: { source: { type: 'spire' }, ca_source: { type: 'spire', trust_domains: ['Cluster-B.example'] } } }],
          },
        },
      },
    };
    expect(() => parseNodeConfig(JSON.stringify(doc))).toThrow(/dataplane\.servers\[0\]\.tls\.ca_source\.trust_domains\[0\].*lowercase/);
  });
});

describe('dataplane.node_spiffe_paths', () => {
  const withPaths = (paths: unknown): string =>
    JSON.stringify({ services: { 'slim/0': { node_id: 'n', dataplane: { servers: [{ endpoint: '0.0.0.0:1', tls: { insecure: true } }], node_spiffe_paths: paths } } } });

  it('takes SPIFFE ID path patterns', () => {
    expect(parseNodeConfig(withPaths(['/ns/slim/sa/slim', '/slim/*'])).nodeSpiffePaths).toEqual(['/ns/slim/sa/slim', '/slim/*']);
    expect(parseNodeConfig(withPaths(undefined)).nodeSpiffePaths).toBeUndefined();
  });

  it('names a pattern that is not a path', () => {
    expect(() => parseNodeConfig(withPaths(['spiffe://cluster-a.example/ns/slim']))).toThrow(/dataplane\.node_spiffe_paths\[0\].*must be a SPIFFE ID path/);
  });
});
