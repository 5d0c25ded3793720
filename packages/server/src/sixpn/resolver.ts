/**
 * Where machines find DNS. The runtime writes it into each machine's resolv.conf, the host network puts
 * the address on its loopback and lets machines reach it, and the DNS server binds it: one definition,
 * so the three always agree.
 */

/** What machines use as their DNS server, whatever their network (Fly's `fdaa::3`). */
export const RESOLVER_ADDRESS = 'fdaa::3';

/** DNS is served on the standard port, on fdaa::3 and on each network's ::3 alike. */
export const DNS_PORT = 53;

/** A machine's /etc/resolv.conf. */
export const MACHINE_RESOLV_CONF = `nameserver ${RESOLVER_ADDRESS}\n`;
