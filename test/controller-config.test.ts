// slim-controller configuration: the seed's controller values (config.southbound..., spire.
// trustedDomains) load as they are; every problem is one line naming the key.
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../common/config-file.js';
import { join } from 'node:path';
import { loadControllerConfig, parseControllerConfig } from '../controller/config.js';

/** The seed's controller chart values, verbatim (controller-values.yaml's config and spire blocks). */
const SEED = `
config:
  southbound:
    httpHost: 0.0.0.0
    httpPort: "50052"
    tls:
      useSpiffe: true
    spire:
      socketPath: "unix:///run/spire/agent-sockets/api.sock"

spire:
  enabled: true
  trustedDomains:
  - spiffe://cluster-a.example  # Trust cluster-a workloads
  - spiffe://cluster-b.example  # Trust cluster-b workloads
`;

function problems(text: string): string[] {
  let thrown: unknown;
  try {
    parseControllerConfig(text, {});
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'expected the config to be rejected').toBeInstanceOf(ConfigError);
  return (thrown as ConfigError).message.split('\n');
}

describe('controller config', () => {
  it('loads the seed values: SPIFFE mTLS on the southbound, trusting both workload clusters', () => {
    const cfg = parseControllerConfig(SEED, {});
    expect(cfg.southbound).toMatchObject({ host: '0.0.0.0', port: 50052, nodeSpiffePaths: ['/ns/*/sa/slim'] });
    expect(cfg.southbound.tls).toEqual({
      insecure: false,
      skipVerify: false,
      cert: { type: 'spire', socketPath: 'unix:///run/spire/agent-sockets/api.sock' },
      ca: { type: 'spire', socketPath: 'unix:///run/spire/agent-sockets/api.sock', trustDomains: ['cluster-a.example', 'cluster-b.example'] },
    });
    expect(cfg.trustedDomains).toEqual(['cluster-a.example', 'cluster-b.example']);
    // The admin API defaults to loopback with the southbound's TLS (kubectl port-forward).
    expect(cfg.northbound).toMatchObject({ host: '127.0.0.1', port: 50051, tls: cfg.southbound.tls });
    expect(cfg).toMatchObject({ heartbeatIntervalMs: 5000, nodeGracePeriodMs: 15000, commandTimeoutMs: 15000, startupGraceMs: 15000 });
  });

  it('reads reconciler timings and admin identities', () => {
    const cfg = parseControllerConfig(
      `${SEED}
`.replace(
        'config:\n',
        `config:
  reconciler: { heartbeatInterval: 1s, nodeGracePeriod: 3s, commandTimeout: 2s, startupGrace: 500ms }
  northbound: { httpHost: 0.0.0.0, httpPort: 50051, adminSpiffeIds: [spiffe://admin.example/ns/ops/sa/slimctl] }
`,
      ),
    );
    expect(cfg).toMatchObject({ heartbeatIntervalMs: 1000, nodeGracePeriodMs: 3000, commandTimeoutMs: 2000, startupGraceMs: 500 });
    expect(cfg.northbound?.adminSpiffeIds).toEqual(['spiffe://admin.example/ns/ops/sa/slimctl']);
  });

  it('loads the example config', () => {
    const cfg = loadControllerConfig(join(import.meta.dirname, '../examples/controller.yaml'), {});
    expect(cfg.southbound).toMatchObject({ host: '127.0.0.1', port: 50052, tls: { cert: { type: 'spire', socketPath: 'unix:///tmp/slim-dev-issuer/admin/controller.sock' } } });
    expect(cfg.trustedDomains).toEqual(['cluster-a.example', 'cluster-b.example']);
  });

  it('names the key of every problem', () => {
    expect(problems('config:\n  southbound:\n    httpPort: "50o52"\n    tls: { insecure: true }\n')).toEqual([
      'controller config: config.southbound.httpPort: "50o52" is not a port (0-65535; 0 picks a free one)',
    ]);
    expect(problems('config:\n  southbound:\n    tls: { useSpiffe: true, insecure: true }\n')[0]).toContain('config.southbound.tls: choose one of useSpiffe, insecure');
    expect(problems('spire:\n  trustedDomains: [spiffe://Cluster-A]\n  enabled: true\n')[0]).toMatch(/^controller config: spire\.trustedDomains\[0\]: invalid trust domain/);
    expect(problems('config:\n  southbound:\n    nodeSpiffePaths: [ns/slim]\n    tls: { insecure: true }\n')[0]).toContain('config.southbound.nodeSpiffePaths[0]: must be a SPIFFE ID path');
    expect(problems('config:\n  southbound: { httpPort: 1 }\n')).toEqual([
      'controller config: config.southbound.tls: set useSpiffe: true (SPIRE), certFile/keyFile/caFile, or insecure: true (development only)',
    ]);
    expect(problems('config:\n  southbnd: {}\n')[0]).toContain('southbnd');
    // A listener that cannot ask for client certificates would authenticate no node.
    expect(problems('config:\n  southbound:\n    tls: { certFile: /c.pem, keyFile: /k.pem }\n')[0]).toContain(
      'config.southbound.tls.caFile: is required with certFile/keyFile',
    );
    expect(problems('config:\n  southbound:\n    tls: { insecure: true }\n  reconciler: { heartbeatInterval: 0 }\n')[0]).toContain(
      'config.reconciler.heartbeatInterval: must be at least 10ms',
    );
  });
});
