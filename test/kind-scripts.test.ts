// kind/: the scripts that stand up the seed's three clusters. Kind and Docker cannot run here, so
// the scripts are checked by construction: shellcheck; the plan `all.sh --dry-run` prints, with
// every real tool replaced by a stub that records being called (it must not be); a real run
// against stubs that answer like kubectl, helm, kind and docker would, to exercise what a dry run
// skips (LoadBalancer IPs, CoreDNS, bundles, the checks); and the manifests against Kubernetes'
// schemas and the SPIRE fields they use (test/support/k8s-validate.ts, shared with the charts).

import { spawnSync } from 'node:child_process';
import { accessSync, chmodSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, delimiter, isAbsolute, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { parseSlimEndpoint } from '../client/slim-endpoint.js';
import { aliceArgs, bobArgs } from '../harness/seed-deployment.js';
import { type ClusterFederatedTrustDomain, type ClusterSPIFFEID, validateK8sObject } from './support/k8s-validate.js';

const ROOT = resolve(import.meta.dirname, '..');
const KIND = join(ROOT, 'kind');
const CLUSTERS = ['admin.example', 'cluster-a.example', 'cluster-b.example'] as const;
const WORKLOAD = ['cluster-a.example', 'cluster-b.example'] as const;
const CONTEXTS: string[] = CLUSTERS.map((c) => `kind-${c}`);
const CLASS_NAME = 'spire-server-spire';
const SOCKET_DIR = '/tmp/spire-agent/public';
const SOCKET = `unix:${SOCKET_DIR}/api.sock`;
const IMAGE = 'ghcr.io/slim-ts/slim-ts:0.1.0';
const LB_NAMES = [
  'spire.admin.example',
  'spire.cluster-a.example',
  'spire.cluster-b.example',
  'slim-control.admin.example',
  'slim.cluster-a.example',
  'slim.cluster-b.example',
];
/** The step scripts; lib.sh is sourced by them, never run. */
const SCRIPTS = readdirSync(KIND)
  .filter((f) => f.endsWith('.sh') && f !== 'lib.sh')
  .sort();

/** What the scripts may call: the host's own utilities, never a cluster tool. */
const HOST_TOOLS = ['bash', 'env', 'cat', 'basename', 'dirname', 'mkdir', 'mktemp', 'rm', 'mv', 'touch', 'awk', 'sed', 'grep', 'sort', 'tr', 'paste', 'head', 'tail', 'wc', 'id', 'ps', 'pgrep', 'sleep', 'nohup'];
/** Replaced by stubs that record every call. */
const CLUSTER_TOOLS = ['kind', 'kubectl', 'helm', 'docker', 'sudo', 'cloud-provider-kind', 'go', 'jq'];

function which(tool: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const file = join(dir, tool);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

const BASH = which('bash') ?? '/bin/bash';
const scratch: string[] = [];
afterAll(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

interface Sandbox {
  dir: string;
  bin: string;
  state: string;
  calls: string;
  env: NodeJS.ProcessEnv;
}

/**
 * A PATH with the host utilities and, unless `withStubs` is false, stubs for the cluster tools.
 * `stub` scripts answer like the real tools; without it every stub fails, so a dry run that calls
 * one is caught twice (the call is recorded, and the script sees a failure).
 */
function sandbox(opts: { withStubs?: boolean; stubs?: Record<string, string> } = {}): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), 'kind-scripts-'));
  scratch.push(dir);
  const bin = join(dir, 'bin');
  const state = join(dir, 'state');
  const calls = join(dir, 'calls.log');
  mkdirSync(bin);
  for (const tool of HOST_TOOLS) {
    const path = which(tool);
    if (path) symlinkSync(path, join(bin, tool));
  }
  if (opts.withStubs !== false) {
    for (const tool of CLUSTER_TOOLS) {
      const body = opts.stubs?.[tool] ?? 'exit 97';
      const file = join(bin, tool);
      writeFileSync(file, `#!${BASH}\nprintf '%s\\n' "${tool} $*" >>"$STUB_CALLS"\n${body}\n`);
      chmodSync(file, 0o755);
    }
  }
  const env: NodeJS.ProcessEnv = { PATH: bin, HOME: join(dir, 'home'), TMPDIR: dir, SLIM_KIND_STATE: state, STUB_CALLS: calls, STUB_DIR: dir, LB_SUDO: '' };
  return { dir, bin, state, calls, env };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runScript(script: string, args: string[], env: NodeJS.ProcessEnv): Run {
  const r = spawnSync(BASH, [join(KIND, script), ...args], { cwd: tmpdir(), env, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function recordedCalls(sb: Sandbox): string[] {
  return existsSync(sb.calls) ? readFileSync(sb.calls, 'utf8').split('\n').filter(Boolean) : [];
}

/** Shell words of one printed command: bare words, '…' quoting, backslash escapes. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated quote in: ${line}`);
      word += line.slice(i + 1, end);
      i = end;
      inWord = true;
    } else if (c === '\\') {
      word += line[++i] ?? '';
      inWord = true;
    } else if (c === ' ') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** The commands a dry run printed ("+ cmd args"), as argv arrays. */
function commands(stdout: string): string[][] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('+ '))
    .map((l) => shellWords(l.slice(2)));
}

function flag(argv: string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) return argv[i + 1];
    if (argv[i]!.startsWith(`${name}=`)) return argv[i]!.slice(name.length + 1);
  }
  return undefined;
}

function flags(argv: string[], name: string): string[] {
  return argv.flatMap((a, i) => (a === name && i + 1 < argv.length ? [argv[i + 1]!] : []));
}

function yamlDocs(file: string): Record<string, unknown>[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS() as Record<string, unknown>;
  });
}

const shellcheck = which('shellcheck');
const mustShellcheck = process.env.CI === 'true';
if (!shellcheck && !mustShellcheck) {
  console.warn('kind-scripts.test.ts: shellcheck is not installed, skipping the shellcheck test (apt-get install -y shellcheck); CI=true makes it mandatory');
}

describe('kind/*.sh static checks', () => {
  it('has one script per seed step, plus all.sh and lib.sh', () => {
    for (const s of ['up.sh', 'image.sh', 'spire.sh', 'federation.sh', 'controller.sh', 'slim.sh', 'receiver.sh', 'sender.sh', 'verify.sh', 'down.sh', 'all.sh']) {
      expect(SCRIPTS).toContain(s);
    }
    expect(existsSync(join(KIND, 'lib.sh'))).toBe(true);
  });

  it.skipIf(!shellcheck && !mustShellcheck)('passes shellcheck (every script, following lib.sh)', () => {
    if (!shellcheck) throw new Error('CI=true but shellcheck is not installed: .ci/run must apt-get install shellcheck');
    const files = [...SCRIPTS.map((s) => `kind/${s}`), 'kind/lib.sh'];
    const r = spawnSync(shellcheck, ['--external-sources', '--severity=style', ...files], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('parses as bash, starts with set -euo pipefail and sources lib.sh', () => {
    for (const s of SCRIPTS) {
      const text = readFileSync(join(KIND, s), 'utf8');
      expect(text.startsWith('#!/usr/bin/env bash\n'), s).toBe(true);
      expect(text, s).toMatch(/^set -euo pipefail$/m);
      expect(text, s).toMatch(/^source "\$\(dirname "\$\{BASH_SOURCE\[0\]\}"\)\/lib\.sh"$/m);
      accessSync(join(KIND, s), constants.X_OK);
      const r = spawnSync(BASH, ['-n', join(KIND, s)], { encoding: 'utf8' });
      expect(r.stderr, s).toBe('');
    }
  });
});

describe('kind/*.sh --help and bad arguments', () => {
  it.each(SCRIPTS)('%s --help prints its usage and calls nothing', (script) => {
    const sb = sandbox();
    const r = runScript(script, ['--help'], sb.env);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: kind/${script}`);
    expect(r.stdout).toContain('--dry-run');
    expect(recordedCalls(sb)).toEqual([]);
  });

  it('rejects an unknown argument', () => {
    const sb = sandbox();
    const r = runScript('up.sh', ['--bogus'], sb.env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('unknown argument: --bogus');
    expect(recordedCalls(sb)).toEqual([]);
  });

  it('names every missing tool before doing anything', () => {
    const sb = sandbox({ withStubs: false });
    const r = runScript('up.sh', [], sb.env);
    expect(r.code).toBe(1);
    for (const tool of ['kind', 'docker', 'cloud-provider-kind']) expect(r.stderr).toContain(`error: ${tool} is required but not on PATH`);
    expect(r.stderr).toContain('go install sigs.k8s.io/cloud-provider-kind');
  });
});

describe('kind/all.sh --dry-run', () => {
  const sb = sandbox();
  let r: Run;
  let cmds: string[][];
  beforeAll(() => {
    r = runScript('all.sh', ['--dry-run'], sb.env);
    cmds = commands(r.stdout);
  });
  const named = (tool: string, ...sub: string[]) => cmds.filter((c) => c[0] === tool && sub.every((s, i) => c[i + 1] === s));

  it('succeeds without running a single cluster tool', () => {
    expect(r.stderr).not.toMatch(/^error:/m);
    expect(r.code).toBe(0);
    expect(recordedCalls(sb)).toEqual([]);
    expect(cmds.length).toBeGreaterThan(50);
  });

  it('honours DRY_RUN=1 like --dry-run, and leaves the real state directory alone', () => {
    const other = sandbox();
    const env: NodeJS.ProcessEnv = { ...other.env, DRY_RUN: '1' };
    delete env.SLIM_KIND_STATE;
    const r2 = runScript('up.sh', [], env);
    expect(r2.code).toBe(0);
    expect(recordedCalls(other)).toEqual([]);
    expect(commands(r2.stdout).some((c) => c[0] === 'kind' && c[1] === 'create')).toBe(true);
    expect(existsSync(join(other.dir, 'home', '.local', 'state', 'slim-kind'))).toBe(false);
  });

  it('runs cloud-provider-kind under sudo for a non-root user, asking for the password up front', () => {
    const other = sandbox();
    const r2 = runScript('up.sh', ['--dry-run'], { ...other.env, LB_SUDO: 'sudo' });
    const printed = commands(r2.stdout);
    const sudo = printed.findIndex((c) => c.join(' ') === 'sudo -v');
    const start = printed.findIndex((c) => c[0] === 'sudo' && c[1] === 'cloud-provider-kind');
    expect(sudo).toBeGreaterThanOrEqual(0);
    expect(start).toBeGreaterThan(sudo);
    expect(printed[start]!.slice(-3)).toEqual([`>${join(other.state, 'cloud-provider-kind.log')}`, '2>&1', '&']);
    expect(recordedCalls(other)).toEqual([]);
  });

  it('creates the three Kind clusters from kind/clusters', () => {
    const creates = named('kind', 'create', 'cluster');
    expect(creates.map((c) => flag(c, '--name')).sort()).toEqual([...CLUSTERS]);
    for (const c of creates) expect(flag(c, '--config')).toBe(`kind/clusters/${flag(c, '--name')}.yaml`);
    expect(cmds.some((c) => c.includes('cloud-provider-kind'))).toBe(true);
  });

  it('builds the image and loads it into every cluster', () => {
    const build = named('docker', 'build');
    expect(build).toHaveLength(1);
    expect(flag(build[0]!, '--tag')).toBe(IMAGE);
    expect(flag(build[0]!, '--file')).toBe('Dockerfile');
    const loads = named('kind', 'load', 'docker-image');
    expect(loads.map((c) => flag(c, '--name')).sort()).toEqual([...CLUSTERS]);
    for (const c of loads) expect(c[3]).toBe(IMAGE);
  });

  it('installs SPIRE with our values in every cluster', () => {
    const installs = named('helm', 'upgrade', '--install', 'spire', 'spire');
    expect(installs.map((c) => flag(c, '--kube-context')).sort()).toEqual(CONTEXTS);
    for (const c of installs) {
      const cluster = flag(c, '--kube-context')!.slice('kind-'.length);
      expect(flags(c, '--values')).toEqual(['kind/spire/common.yaml', `kind/spire/${cluster}.yaml`]);
      expect(flag(c, '--namespace')).toBe('spire');
      expect(flag(c, '--repo')).toBe('https://spiffe.github.io/helm-charts-hardened/');
    }
    expect(named('helm', 'upgrade', '--install', 'spire-crds', 'spire-crds').map((c) => flag(c, '--kube-context')).sort()).toEqual(CONTEXTS);
  });

  it('installs the controller on admin.example and SLIM on both workload clusters, with kind/values', () => {
    const controller = named('helm', 'upgrade', '--install', 'slim-control', 'charts/slim-controller');
    expect(controller).toHaveLength(1);
    expect(flag(controller[0]!, '--kube-context')).toBe('kind-admin.example');
    expect(flag(controller[0]!, '--namespace')).toBe('slim');
    expect(flags(controller[0]!, '--values')).toEqual(['kind/values/controller.yaml']);
    expect(flags(controller[0]!, '--set-string')).toEqual(expect.arrayContaining(['image.repository=ghcr.io/slim-ts/slim-ts', 'image.tag=0.1.0']));

    const slim = named('helm', 'upgrade', '--install', 'slim', 'charts/slim');
    expect(slim.map((c) => flag(c, '--kube-context')).sort()).toEqual(WORKLOAD.map((c) => `kind-${c}`));
    for (const c of slim) {
      const short = flag(c, '--kube-context')!.slice('kind-'.length).replace('.example', '');
      expect(flags(c, '--values')).toEqual([`kind/values/${short}.yaml`]);
      expect(flag(c, '--namespace')).toBe('slim');
      expect(flags(c, '--set-string')).toEqual(expect.arrayContaining(['slim.image.repository=ghcr.io/slim-ts/slim-ts', 'slim.image.tag=0.1.0']));
    }
  });

  it('names a Kind context on every kubectl and helm command', () => {
    for (const c of cmds.filter((c) => c[0] === 'kubectl')) expect(CONTEXTS, c.join(' ')).toContain(flag(c, '--context'));
    for (const c of cmds.filter((c) => c[0] === 'helm')) expect(CONTEXTS, c.join(' ')).toContain(flag(c, '--kube-context'));
  });

  it('references only files that exist (the repository, or what it rendered into the state directory)', () => {
    const referenced: string[] = [];
    for (const c of cmds) {
      for (const [i, word] of c.entries()) {
        const value = word.replace(/^>/, '');
        const isFileFlag = i > 0 && ['-f', '--values', '--config', '--file'].includes(c[i - 1]!);
        if (isFileFlag || /^(kind|charts)\//.test(value) || value.startsWith(sb.state)) referenced.push(value);
      }
    }
    expect(referenced).toEqual(expect.arrayContaining(['kind/values/controller.yaml', 'kind/values/cluster-a.yaml', 'kind/values/cluster-b.yaml', 'charts/slim', 'charts/slim-controller', 'kind/apps/alice.yaml', 'kind/apps/bob.yaml']));
    for (const path of referenced) {
      if (isAbsolute(path)) {
        expect(path.startsWith(sb.state), path).toBe(true);
        if (!path.endsWith('.log')) expect(existsSync(path), path).toBe(true);
      } else {
        expect(existsSync(join(ROOT, path)), path).toBe(true);
      }
    }
  });

  it("prints the seed's /etc/hosts lines with placeholders for the LoadBalancer IPs", () => {
    for (const name of LB_NAMES) expect(r.stdout).toContain(`Add to your /etc/hosts: <lb-ip:${name}>    ${name}`);
  });

  it('adds every LoadBalancer name to every cluster’s CoreDNS', async () => {
    for (const cluster of CLUSTERS) {
      const [doc] = yamlDocs(join(sb.state, 'coredns', `${cluster}.yaml`));
      await validateK8sObject(doc!);
      const cm = doc as unknown as { metadata: { name: string; namespace: string }; data: { Corefile: string } };
      expect(cm.metadata).toEqual({ name: 'coredns', namespace: 'kube-system' });
      for (const name of LB_NAMES) expect(cm.data.Corefile).toContain(`<lb-ip:${name}> ${name}`);
      expect(cmds).toContainEqual(['kubectl', '--context', `kind-${cluster}`, 'replace', '-f', join(sb.state, 'coredns', `${cluster}.yaml`)]);
    }
  });

  it('federates each cluster with the other two, never with itself', async () => {
    const applies = cmds.filter((c) => c[0] === 'kubectl' && c.includes('apply') && (flag(c, '-f') ?? '').startsWith(join(sb.state, 'federation')));
    expect(applies).toHaveLength(6);
    for (const c of applies) {
      const cluster = flag(c, '--context')!.slice('kind-'.length);
      const docs = yamlDocs(flag(c, '-f')!);
      expect(docs).toHaveLength(1);
      await validateK8sObject(docs[0]!);
      const spec = docs[0]!.spec as { trustDomain: string; trustDomainBundle: string };
      expect(spec.trustDomain).not.toBe(cluster);
      expect(spec.trustDomainBundle.trim()).toBe(`<bundle:${spec.trustDomain}>`);
    }
    const bundleReads = cmds.filter((c) => c.includes('bundle') && c.includes('show'));
    expect(bundleReads.map((c) => flag(c, '--context')).sort()).toEqual(CONTEXTS);
  });

  it('deploys alice on cluster-a and bob on cluster-b, then checks the seed’s two outputs', () => {
    expect(cmds).toContainEqual(['kubectl', '--context', 'kind-cluster-a.example', 'apply', '-f', 'kind/apps/alice.yaml']);
    expect(cmds).toContainEqual(['kubectl', '--context', 'kind-cluster-b.example', 'apply', '-f', 'kind/apps/bob.yaml']);
    expect(cmds).toContainEqual(['kubectl', '--context', 'kind-admin.example', '-n', 'slim', 'logs', 'deployment/slim-control', '--tail=-1']);
    expect(cmds).toContainEqual(['kubectl', '--context', 'kind-cluster-b.example', 'logs', 'bob', '-c', 'client']);
  });

  it('runs the steps in the seed’s order', () => {
    const order = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('# step '))
      .map((l) => l.slice('# step '.length));
    expect(order).toEqual(['up.sh', 'image.sh', 'spire.sh', 'federation.sh', 'controller.sh', 'slim.sh', 'receiver.sh', 'sender.sh', 'verify.sh']);
  });

  it('uses SLIM_IMAGE everywhere, registry ports included', async () => {
    const other = sandbox();
    const env = { ...other.env, SLIM_IMAGE: 'localhost:5000/slim-ts:dev' };
    const controller = commands(runScript('controller.sh', ['--dry-run'], env).stdout);
    const install = controller.find((c) => c[0] === 'helm')!;
    expect(flags(install, '--set-string')).toEqual(expect.arrayContaining(['image.repository=localhost:5000/slim-ts', 'image.tag=dev']));
    const receiver = commands(runScript('receiver.sh', ['--dry-run'], env).stdout);
    const manifest = flag(receiver.find((c) => c.includes('apply'))!, '-f')!;
    expect(manifest.startsWith(other.state)).toBe(true);
    const docs = yamlDocs(manifest);
    for (const doc of docs) await validateK8sObject(doc);
    const pod = docs.find((d) => d.kind === 'Pod') as { spec: { containers: { image: string }[] } };
    expect(pod.spec.containers[0]!.image).toBe('localhost:5000/slim-ts:dev');
    expect(recordedCalls(other)).toEqual([]);
  });
});

/** Whether `pid` is gone (a zombie waiting for whoever adopted it counts as gone) within `ms`. */
async function exited(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
      if (/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) return true;
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/** Stubs that answer like the real tools for one complete deployment. */
function answeringStubs(): Record<string, string> {
  const ids = { 'kind-admin.example': 200, 'kind-cluster-a.example': 201, 'kind-cluster-b.example': 202 };
  const ctx = 'ctx=""; prev=""; for a in "$@"; do [[ $prev == --context ]] && ctx=$a; prev=$a; done';
  return {
    kind: 'if [[ $1 == get ]]; then echo admin.example; fi',
    helm: 'exit 0',
    docker: 'exit 0',
    'cloud-provider-kind': 'exec sleep 30',
    kubectl: [
      ctx,
      'case " $* " in',
      `  *" get service spire-server "*) case $ctx in kind-admin.example) echo 172.18.255.${ids['kind-admin.example']};; kind-cluster-a.example) echo 172.18.255.${ids['kind-cluster-a.example']};; *) echo 172.18.255.${ids['kind-cluster-b.example']};; esac ;;`,
      '  *" get service slim-control "*) echo 172.18.255.210 ;;',
      '  *" get service slim "*) case $ctx in kind-cluster-a.example) echo 172.18.255.211;; *) echo 172.18.255.212;; esac ;;',
      '  *" get configmap coredns "*) cat "$STUB_DIR/Corefile" ;;',
      // Multi-line, as spire-server prints it; x5c names the cluster it came from.
      '  *" bundle show "*) printf \'{\\n    "keys": [\\n        {\\n            "use": "x509-svid",\\n            "x5c": ["%s"]\\n        }\\n    ],\\n    "spiffe_sequence": 1\\n}\\n\' "$ctx" ;;',
      '  *" federation list "*) echo "Found 2 federation relationships" ;;',
      '  *" get pod bob "*) echo Succeeded ;;',
      '  *" logs deployment/slim-control "*) cat "$STUB_DIR/controller.log" ;;',
      '  *" logs bob "*) echo "org/ns/bob/7fb27a223e4f1d6c: 10/10 replies received" ;;',
      'esac',
    ].join('\n'),
  };
}

const KIND_COREFILE = `.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
`;

/** The controller's JSON log lines for these node registrations (some nodes reconnected). */
function controllerLog(nodes: string[]): string {
  return [...nodes, ...nodes.slice(0, 2)]
    .map((node) => {
      const [group, id] = node.split('/') as [string, string];
      return JSON.stringify({ level: 'info', component: 'slim-controller', node_id: id, group, identity: `spiffe://${group}/ns/slim/sa/slim`, msg: `Registering node with ID ${id}` });
    })
    .join('\n');
}

const SIX_NODES = ['cluster-a.example/slim-0', 'cluster-a.example/slim-1', 'cluster-a.example/slim-2', 'cluster-b.example/slim-0', 'cluster-b.example/slim-1', 'cluster-b.example/slim-2'];

function stubbedSandbox(nodes: string[]): Sandbox {
  const sb = sandbox({ stubs: answeringStubs() });
  writeFileSync(join(sb.dir, 'Corefile'), KIND_COREFILE);
  writeFileSync(join(sb.dir, 'controller.log'), controllerLog(nodes));
  return sb;
}

describe('kind/all.sh against stub tools (what a dry run cannot show)', () => {
  const sb = stubbedSandbox(SIX_NODES);
  let up: Run;
  let calls: string[];
  beforeAll(() => {
    up = runScript('all.sh', [], sb.env);
    calls = recordedCalls(sb);
  });

  it('runs every step and passes the checks', () => {
    expect(up.stderr).not.toMatch(/^error:/m);
    expect(up.code).toBe(0);
    expect(up.stderr).toContain('controller registered 6 nodes');
    expect(up.stderr).toContain('bob got 10/10 replies');
  });

  it('keeps an existing cluster and creates the others', () => {
    const creates = calls.filter((c) => c.startsWith('kind create cluster'));
    expect(creates).toHaveLength(2);
    expect(creates.join('\n')).not.toContain('--name admin.example');
  });

  it('prints the /etc/hosts line of each LoadBalancer and records it', () => {
    const ips: Record<string, string> = {
      'spire.admin.example': '172.18.255.200',
      'spire.cluster-a.example': '172.18.255.201',
      'spire.cluster-b.example': '172.18.255.202',
      'slim-control.admin.example': '172.18.255.210',
      'slim.cluster-a.example': '172.18.255.211',
      'slim.cluster-b.example': '172.18.255.212',
    };
    for (const [name, ip] of Object.entries(ips)) expect(up.stdout).toContain(`Add to your /etc/hosts: ${ip}    ${name}`);
  });

  it('gives every cluster a CoreDNS block for all six names, keeping the Kind Corefile', async () => {
    for (const cluster of CLUSTERS) {
      const [doc] = yamlDocs(join(sb.state, 'coredns', `${cluster}.yaml`));
      await validateK8sObject(doc!);
      const cm = doc as unknown as { data: { Corefile: string } };
      const corefile = cm.data.Corefile;
      expect(corefile.startsWith(KIND_COREFILE)).toBe(true);
      expect(corefile).toContain('admin.example:53 cluster-a.example:53 cluster-b.example:53 {');
      expect(corefile).toContain('        172.18.255.211 slim.cluster-a.example\n');
      expect(corefile.match(/^ {8}172\.18\.255\.\d+ \S+$/gm)).toHaveLength(6);
      expect(calls).toContain(`kubectl --context kind-${cluster} replace -f ${join(sb.state, 'coredns', `${cluster}.yaml`)}`);
    }
  });

  it("seeds each ClusterFederatedTrustDomain with that trust domain's own bundle", async () => {
    for (const td of CLUSTERS) {
      const [doc] = yamlDocs(join(sb.state, 'federation', `${td}.yaml`));
      await validateK8sObject(doc!);
      const spec = doc!.spec as { trustDomain: string; trustDomainBundle: string };
      expect(spec.trustDomain).toBe(td);
      const bundle = JSON.parse(spec.trustDomainBundle) as { keys: { x5c: string[] }[] };
      expect(bundle.keys[0]!.x5c).toEqual([`kind-${td}`]);
      for (const cluster of CLUSTERS) {
        const apply = `kubectl --context kind-${cluster} apply -f ${join(sb.state, 'federation', `${td}.yaml`)}`;
        expect(calls.includes(apply), apply).toBe(cluster !== td);
      }
    }
  });

  // Last: it removes what the tests above read.
  it('down.sh deletes the clusters and stops the cloud-provider-kind it started', async () => {
    const pid = Number(readFileSync(join(sb.state, 'cloud-provider-kind.pid'), 'utf8'));
    expect(() => process.kill(pid, 0)).not.toThrow();
    const down = runScript('down.sh', [], sb.env);
    expect(down.code).toBe(0);
    const after = recordedCalls(sb).slice(calls.length);
    expect(after.filter((c) => c.startsWith('kind delete cluster')).length).toBe(3);
    expect(existsSync(join(sb.state, 'cloud-provider-kind.pid'))).toBe(false);
    expect(down.stderr).toContain(`+ kill ${pid}`);
    expect(await exited(pid, 5_000)).toBe(true);
  });

  it('verify.sh fails, naming the refusals, when nodes are missing', () => {
    const bad = stubbedSandbox(SIX_NODES.slice(0, 3));
    const r = runScript('verify.sh', [], bad.env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('FAIL: the controller registered 3 of 6 nodes');
  });
});

interface PodShape {
  metadata: { name: string; namespace: string; labels: Record<string, string> };
  spec: {
    serviceAccountName: string;
    restartPolicy?: string;
    containers: { name: string; image: string; command: string[]; args: string[]; volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[] }[];
    initContainers?: { name: string; image: string; volumeMounts: { name: string; mountPath: string }[] }[];
    volumes: { name: string; csi?: { driver: string; readOnly?: boolean } }[];
  };
}

describe('kind/apps manifests', () => {
  const apps = [
    { name: 'alice', cluster: 'cluster-a.example', peer: 'cluster-b.example', program: 'slim-receiver' },
    { name: 'bob', cluster: 'cluster-b.example', peer: 'cluster-a.example', program: 'slim-sender' },
  ];

  it.each(apps)('$name: a ServiceAccount, a ClusterSPIFFEID and a Pod that Kubernetes accepts', async ({ name, peer, program }) => {
    const docs = yamlDocs(join(KIND, 'apps', `${name}.yaml`));
    expect(docs.map((d) => d.kind)).toEqual(['ServiceAccount', 'ClusterSPIFFEID', 'Pod']);
    for (const doc of docs) await validateK8sObject(doc);
    const [sa, csid, podDoc] = docs as [Record<string, unknown>, Record<string, unknown>, Record<string, unknown>];

    const pod = podDoc as unknown as PodShape;
    expect((sa.metadata as { name: string; namespace: string })).toEqual({ name, namespace: 'default' });
    expect(pod.metadata.name).toBe(name);
    expect(pod.metadata.namespace).toBe('default');
    expect(pod.spec.serviceAccountName).toBe(name);

    const id = csid as unknown as ClusterSPIFFEID;
    expect(id.metadata).toEqual({ name: `slim-demo-${name}` });
    expect(id.spec.className).toBe(CLASS_NAME);
    expect(id.spec.federatesWith).toEqual([peer]);
    expect(id.spec.namespaceSelector).toEqual({ matchLabels: { 'kubernetes.io/metadata.name': 'default' } });
    const podLabels = id.spec.podSelector?.matchLabels ?? {};
    expect(id.spec.podSelector).toEqual({ matchLabels: podLabels });
    expect(Object.keys(podLabels).length).toBeGreaterThan(0);
    for (const [k, v] of Object.entries(podLabels)) expect(pod.metadata.labels[k]).toBe(v);

    expect(pod.spec.containers.map((c) => c.name)).toEqual(['client']);
    const client = pod.spec.containers[0]!;
    expect(client.image).toBe(IMAGE);
    expect(client.command).toEqual([program]);
    const mount = client.volumeMounts.find((m) => m.mountPath === SOCKET_DIR);
    expect(mount?.readOnly).toBe(true);
    const volume = pod.spec.volumes.find((v) => v.name === mount!.name);
    expect(volume?.csi).toEqual({ driver: 'csi.spiffe.io', readOnly: true });
    // The SVID wait runs the same image against the same socket.
    for (const init of pod.spec.initContainers ?? []) {
      expect(init.image).toBe(IMAGE);
      expect(init.volumeMounts).toContainEqual(expect.objectContaining({ name: mount!.name, mountPath: SOCKET_DIR }));
    }

    const slimArg = client.args[client.args.indexOf('--slim') + 1]!;
    const endpoint = parseSlimEndpoint(slimArg);
    expect(endpoint.url).toBe('https://slim.slim.svc.cluster.local:46357');
    const tls = (JSON.parse(slimArg) as { tls: { source: { socket_path: string }; ca_source: { socket_path: string; trust_domains: string[] } } }).tls;
    expect(tls.source.socket_path).toBe(SOCKET);
    expect(tls.ca_source.socket_path).toBe(SOCKET);
    expect(tls.ca_source.trust_domains).toEqual([peer]);
    expect(flag(client.args, '--local')).toBe(`org/ns/${name}`);
  });

  it('alice and bob run the flags the demo and the e2e test run (MLS session included)', () => {
    // --slim differs by place (Service DNS vs LoadBalancer), and bob waits longer for routes in a cluster.
    const normalise = (args: string[]): string[] => args.map((a, i) => (args[i - 1] === '--slim' || args[i - 1] === '--route-wait' ? '*' : a));
    for (const [name, harness] of [['alice', aliceArgs('x')], ['bob', bobArgs('x')]] as const) {
      const pod = yamlDocs(join(KIND, 'apps', `${name}.yaml`)).find((d) => d.kind === 'Pod') as unknown as PodShape;
      const args = pod.spec.containers[0]!.args;
      expect(normalise(args).sort(), name).toEqual(normalise(harness).sort());
      expect(args, name).toContain('--enable-mls');
    }
  });

  it('bob sends 10 messages to alice once and never restarts', () => {
    const pod = yamlDocs(join(KIND, 'apps', 'bob.yaml')).find((d) => d.kind === 'Pod') as unknown as PodShape;
    expect(pod.spec.restartPolicy).toBe('Never');
    const args = pod.spec.containers[0]!.args;
    expect(flag(args, '--iterations')).toBe('10');
    expect(flag(args, '--remote')).toBe('org/ns/alice');
  });

  it('objects that break the schema are caught (the validator is live)', async () => {
    await expect(validateK8sObject({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { containers: [{ name: 'c', image: 'i', args: 'not-a-list' }] } } as never)).rejects.toThrow(/Pod x/);
    const alice = yamlDocs(join(KIND, 'apps', 'alice.yaml')).find((d) => d.kind === 'ClusterSPIFFEID') as unknown as ClusterSPIFFEID;
    const uriFederation: ClusterSPIFFEID = { ...alice, spec: { ...alice.spec, federatesWith: ['spiffe://cluster-b.example'] } };
    await expect(validateK8sObject(uriFederation)).rejects.toThrow(/federatesWith/);
    const badName: ClusterSPIFFEID = { ...alice, metadata: { name: 'Slim_Demo' } };
    await expect(validateK8sObject(badName)).rejects.toThrow(/metadata\.name/);
  });
});

describe('kind/federation manifests', () => {
  it.each(CLUSTERS)('%s: a ClusterFederatedTrustDomain for the https_spiffe bundle endpoint spire.<td>:8443', async (td) => {
    const docs = yamlDocs(join(KIND, 'federation', `${td}.yaml`));
    expect(docs).toHaveLength(1);
    await validateK8sObject(docs[0]!);
    const cftd = docs[0] as unknown as ClusterFederatedTrustDomain;
    expect(cftd.metadata).toEqual({ name: td.replaceAll('.', '-') });
    expect(cftd.spec.className).toBe(CLASS_NAME);
    expect(cftd.spec.trustDomain).toBe(td);
    expect(cftd.spec.bundleEndpointURL).toBe(`https://spire.${td}:8443`);
    expect(cftd.spec.bundleEndpointProfile).toEqual({ type: 'https_spiffe', endpointSPIFFEID: `spiffe://${td}/spire/server` });
    expect(cftd.spec.trustDomainBundle?.trim()).toBe('@TRUST_DOMAIN_BUNDLE@');
  });
});

describe('kind/clusters and kind/spire', () => {
  it('defines three Kind clusters with their own pod and service ranges', () => {
    const ranges: string[] = [];
    for (const name of CLUSTERS) {
      const c = parseYaml(readFileSync(join(KIND, 'clusters', `${name}.yaml`), 'utf8')) as { kind: string; apiVersion: string; name: string; networking: { podSubnet: string; serviceSubnet: string } };
      expect(c.kind).toBe('Cluster');
      expect(c.apiVersion).toBe('kind.x-k8s.io/v1alpha4');
      expect(c.name).toBe(name);
      ranges.push(c.networking.podSubnet, c.networking.serviceSubnet);
    }
    expect(new Set(ranges).size).toBe(6);
  });

  it('configures SPIRE as the charts, apps and federation expect', () => {
    const common = parseYaml(readFileSync(join(KIND, 'spire', 'common.yaml'), 'utf8')) as {
      'spire-server': { service: { type: string }; federation: { enabled: boolean; bundleEndpoint: { port: number } }; controllerManager: { className: string; identities: { clusterSPIFFEIDs: { default: { enabled: boolean } } } } };
      'spire-agent': { socketPath: string };
      'spiffe-csi-driver': { agentSocketPath: string };
    };
    const server = common['spire-server'];
    expect(server.service.type).toBe('LoadBalancer');
    expect(server.federation).toMatchObject({ enabled: true, bundleEndpoint: { port: 8443 } });
    expect(server.controllerManager.className).toBe(CLASS_NAME);
    expect(server.controllerManager.identities.clusterSPIFFEIDs.default.enabled).toBe(false);
    expect(basename(common['spire-agent'].socketPath)).toBe('api.sock');
    expect(common['spiffe-csi-driver'].agentSocketPath).toBe(common['spire-agent'].socketPath);

    for (const td of CLUSTERS) {
      const v = parseYaml(readFileSync(join(KIND, 'spire', `${td}.yaml`), 'utf8')) as { global: { spire: { trustDomain: string } } };
      expect(v.global.spire.trustDomain).toBe(td);
    }
  });

  it('agrees with the SLIM charts on the controller-manager class and where the socket is mounted', () => {
    const slim = parseYaml(readFileSync(join(ROOT, 'charts', 'slim', 'values.yaml'), 'utf8')) as { spire: { className: string; agentSocket: { hostPath: string; mountPath: string } } };
    const controller = parseYaml(readFileSync(join(ROOT, 'charts', 'slim-controller', 'values.yaml'), 'utf8')) as { spire: { className: string; agentSocket: { hostPath: string; mountPath: string } } };
    const agentSocket = (parseYaml(readFileSync(join(KIND, 'spire', 'common.yaml'), 'utf8')) as { 'spire-agent': { socketPath: string } })['spire-agent'].socketPath;
    expect(slim.spire.className).toBe(CLASS_NAME);
    expect(controller.spire.className).toBe(CLASS_NAME);
    expect(slim.spire.agentSocket.mountPath).toBe(SOCKET_DIR);
    expect(controller.spire.agentSocket.mountPath).toBe('/run/spire/agent-sockets');
    for (const chart of [slim, controller]) expect(`${chart.spire.agentSocket.hostPath}/api.sock`).toBe(agentSocket);
    for (const file of ['cluster-a.yaml', 'cluster-b.yaml']) {
      const text = readFileSync(join(KIND, 'values', file), 'utf8');
      expect(text.match(/socket_path: (\S+)/g)?.every((l) => l.endsWith(SOCKET))).toBe(true);
    }
    expect(readFileSync(join(KIND, 'values', 'controller.yaml'), 'utf8')).toContain('unix:///run/spire/agent-sockets/api.sock');
  });
});

describe('Dockerfile', () => {
  it('builds with npm ci and runs production modules as uid 65532 on node:20-slim', () => {
    const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    expect(text).toContain('ARG NODE_IMAGE=node:20-slim');
    expect(text).toMatch(/RUN npm ci .*\n[\s\S]*RUN npm run build/);
    expect(text).toContain('npm ci --omit=dev');
    expect(text).toMatch(/^USER 65532:65532$/m);
    expect(text).toContain('COPY proto/*.proto ./proto/');
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const p of ['node_modules', 'dist', '.git']) expect(ignored).toContain(p);
  });
});
