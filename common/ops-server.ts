// The operations port every program exposes: Prometheus /metrics, /healthz (the process is
// alive and its event loop turns) and /readyz (it can do its job: listeners up, for example).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface OpsServerOptions {
  host: string;
  port: number;
  registry: Registry;
  /** Undefined when ready, otherwise the reason it is not. */
  notReadyReason(): string | undefined;
  /** Extra read-only JSON documents, by path (e.g. "/connections"): GET returns the provider's value. */
  json?: Record<string, () => unknown>;
}

export class OpsServer {
  private readonly server: http.Server;

  constructor(private readonly opts: OpsServerOptions) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      try {
        const body = await this.opts.registry.metrics();
        res.writeHead(200, { 'content-type': this.opts.registry.contentType });
        res.end(body);
      } catch (err) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`metrics collection failed: ${(err as Error).message}\n`);
      }
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
    } else if (path === '/readyz') {
      const reason = this.opts.notReadyReason();
      res.writeHead(reason ? 503 : 200, { 'content-type': 'text/plain' });
      res.end(reason ? `not ready: ${reason}\n` : 'ready\n');
    } else if (path !== undefined && this.opts.json && Object.hasOwn(this.opts.json, path)) {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' });
        res.end(`${path} is read-only: use GET\n`);
        return;
      }
      try {
        const body = `${JSON.stringify(this.opts.json[path]!(), null, 2)}\n`;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(req.method === 'HEAD' ? undefined : body);
      } catch (err) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`${path} failed: ${(err as Error).message}\n`);
      }
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      const paths = ['/metrics', '/healthz', '/readyz', ...Object.keys(this.opts.json ?? {})];
      res.end(`not found: try ${paths.join(', ')}\n`);
    }
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
