// slim-controller metrics (Prometheus, prom-client).

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface ControllerGauges {
  nodesByStatus(): Record<string, number>;
  routes(): number;
  pendingCommands(): number;
}

export class ControllerMetrics {
  readonly registry = new Registry();
  /** Subscription seen → every route it asks for acknowledged (both steps). */
  readonly convergence: Histogram;
  readonly commands: Counter;
  readonly commandLatency: Histogram;
  readonly registrations: Counter;

  constructor(gauges: ControllerGauges) {
    collectDefaultMetrics({ register: this.registry });
    this.convergence = new Histogram({
      name: 'slim_controller_convergence_seconds',
      help: 'Time from a subscription reaching the controller to every route it needs being acknowledged by the nodes',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
    this.commands = new Counter({
      name: 'slim_controller_commands_total',
      help: 'Commands sent to nodes, by action and result (ok, failed, timeout)',
      labelNames: ['action', 'result'],
      registers: [this.registry],
    });
    this.commandLatency = new Histogram({
      name: 'slim_controller_command_ack_seconds',
      help: 'Time from sending a command to its acknowledgement',
      labelNames: ['action'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 10],
      registers: [this.registry],
    });
    this.registrations = new Counter({
      name: 'slim_controller_registrations_total',
      help: 'Node registrations, by result (accepted, rejected)',
      labelNames: ['result'],
      registers: [this.registry],
    });
    new Gauge({
      name: 'slim_controller_nodes',
      help: 'Known nodes by status (up: control channel open; down: disconnected, inside the grace period)',
      labelNames: ['status'],
      registers: [this.registry],
      collect() {
        const by = gauges.nodesByStatus();
        for (const status of ['up', 'down']) this.set({ status }, by[status] ?? 0);
      },
    });
    new Gauge({
      name: 'slim_controller_routes',
      help: 'Routes the planner wants installed, over all nodes',
      registers: [this.registry],
      collect() {
        this.set(gauges.routes());
      },
    });
    new Gauge({
      name: 'slim_controller_pending_commands',
      help: 'Commands sent and not acknowledged yet',
      registers: [this.registry],
      collect() {
        this.set(gauges.pendingCommands());
      },
    });
  }
}
