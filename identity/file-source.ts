// TLS material from PEM files, re-read when the files change. Kubernetes updates mounted secrets
// by swapping a symlink, which fs.watch on the old inode misses, so the files are polled (stat
// once a second: cheap, and it sees renames, truncations and atomic replaces alike).

import { EventEmitter } from 'node:events';
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';

export class FileMaterialError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FileMaterialError';
  }
}

export interface FileRef {
  path: string;
  /** The config key that named the file, for errors: `...servers[0].tls.source.cert`. */
  key: string;
  what: string;
}

function readRef(ref: FileRef): Buffer {
  try {
    return readFileSync(ref.path);
  } catch (err) {
    throw new FileMaterialError(`${ref.key}: cannot read ${ref.what} ${ref.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export interface PemMaterial {
  /** PEM, as given in the files. */
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
}

/**
 * A certificate/key pair and/or CA bundle read from files. Emits 'update' with the new material
 * after a change that still forms a usable pair; a half-written or mismatched pair is logged and
 * the previous material stays in force.
 */
export class FileSource extends EventEmitter {
  private material: PemMaterial;
  private readonly watched: string[] = [];
  private readonly onStat = (cur: Stats, prev: Stats): void => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino) this.reload();
  };
  private closed = false;

  constructor(
    private readonly refs: { cert?: FileRef; key?: FileRef; ca?: FileRef },
    private readonly log?: Logger,
    pollMs = 1000,
  ) {
    super();
    this.material = this.load();
    for (const ref of [refs.cert, refs.key, refs.ca]) {
      if (!ref || this.watched.includes(ref.path)) continue;
      this.watched.push(ref.path);
      watchFile(ref.path, { interval: pollMs, persistent: false }, this.onStat);
    }
  }

  /** Reads every file and checks that the key matches the certificate. Throws FileMaterialError. */
  private load(): PemMaterial {
    const m: PemMaterial = {};
    if (this.refs.cert) m.cert = readRef(this.refs.cert);
    if (this.refs.key) m.key = readRef(this.refs.key);
    if (this.refs.ca) m.ca = readRef(this.refs.ca);
    try {
      createSecureContext({ cert: m.cert, key: m.key, ca: m.ca });
    } catch (err) {
      const keys = [this.refs.cert?.key, this.refs.key?.key, this.refs.ca?.key].filter(Boolean).join(', ');
      throw new FileMaterialError(`${keys}: the files do not form usable TLS material: ${(err as Error).message}`);
    }
    return m;
  }

  private reload(): void {
    if (this.closed) return;
    try {
      this.material = this.load();
      this.log?.info({ files: this.watched }, 'TLS files changed: new connections use the new material');
      this.emit('update', this.material);
    } catch (err) {
      this.log?.warn({ err: (err as Error).message }, 'TLS files changed but cannot be used; keeping the previous material');
    }
  }

  current(): PemMaterial {
    return this.material;
  }

  close(): void {
    this.closed = true;
    for (const p of this.watched) unwatchFile(p, this.onStat);
  }
}
