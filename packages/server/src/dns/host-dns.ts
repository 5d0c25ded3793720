/**
 * The DNS service of a host with private networks: one view of the store and one server, listening on
 * `fdaa::3` (what every machine's resolv.conf names) and on the `::3` of each network whose bridge is up
 * here, port 53, UDP and TCP.
 */
import type { NetworkPlan } from '../sixpn/address-plan.js';
import { DNS_PORT, RESOLVER_ADDRESS } from '../sixpn/resolver.js';
import type { Store } from '../store/store.js';
import { DnsServer } from './server.js';
import { type DnsSnapshot, DnsView } from './view.js';

export interface HostDns {
  /** Listens on the network's `::3` too; idempotent (an address once bound stays bound). */
  addNetwork(network: NetworkPlan): Promise<void>;
  /** The view the server answers from, for other readers of `.internal` names (tunnels). */
  readonly view: { snapshot(): DnsSnapshot };
  close(): Promise<void>;
}

export async function startHostDns(options: {
  store: Store;
  networks: readonly NetworkPlan[];
  onError: (error: Error) => void;
  /** Default: 53; tests of the server alone use another. */
  port?: number;
  /** Relay other names to the host's resolvers (off: REFUSED). */
  forward: boolean;
  /** Forwarded queries one network may have waiting at once. */
  pendingPerNetwork: number;
}): Promise<HostDns> {
  const port = options.port ?? DNS_PORT;
  const view = new DnsView(options.store);
  await view.start();
  // A socket stays bound to its address when a network's bridge goes (its last app deleted): if the
  // network comes back, the same socket answers again.
  const bound = new Set([RESOLVER_ADDRESS, ...options.networks.map((n) => n.serviceAddress)]);
  const server = new DnsServer({
    view,
    addresses: [...bound].map((host) => ({ host, port })),
    onError: options.onError,
    forward: options.forward,
    forwardPendingPerNetwork: options.pendingPerNetwork,
  });
  try {
    await server.start();
  } catch (error) {
    view.close();
    throw error;
  }
  let adding = Promise.resolve();
  return {
    view,
    addNetwork(network) {
      // One at a time, so two calls for one network never bind twice.
      const next = adding
        .catch(() => undefined)
        .then(async () => {
          if (bound.has(network.serviceAddress)) return;
          await server.addAddress({ host: network.serviceAddress, port });
          bound.add(network.serviceAddress);
        });
      adding = next;
      return next;
    },
    async close() {
      await adding.catch(() => undefined);
      await server.close();
      view.close();
    },
  };
}
