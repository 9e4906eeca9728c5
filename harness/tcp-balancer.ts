// A round-robin TCP load balancer for local runs (tests, the demo): what a cluster's
// LoadBalancer Service does in front of its SLIM nodes. It passes bytes through, so TLS stays
// end to end between the dialling node and whichever node it lands on.

import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface Backend {
  host: string;
  port: number;
}

export class TcpBalancer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private next = 0;
  /** Connections accepted per backend index. */
  readonly counts: number[];

  constructor(private readonly backends: Backend[]) {
    this.counts = backends.map(() => 0);
    this.server = createServer((client) => this.accept(client));
  }

  private accept(client: Socket): void {
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    const tryBackend = (attempt: number): void => {
      if (attempt >= this.backends.length) {
        client.destroy();
        return;
      }
      const i = this.next++ % this.backends.length;
      const b = this.backends[i]!;
      const upstream = connect(b.port, b.host);
      this.sockets.add(upstream);
      upstream.on('close', () => this.sockets.delete(upstream));
      let connected = false;
      upstream.once('connect', () => {
        connected = true;
        this.counts[i]!++;
        upstream.setNoDelay(true);
        client.setNoDelay(true);
        client.pipe(upstream);
        upstream.pipe(client);
      });
      upstream.on('error', () => {
        // A backend that is down is skipped, as a Service skips a pod that is not ready.
        if (!connected) tryBackend(attempt + 1);
        else client.destroy();
      });
      client.on('error', () => upstream.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    };
    tryBackend(0);
  }

  listen(port = 0, host = '127.0.0.1'): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve(this.server.address() as AddressInfo));
    });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
