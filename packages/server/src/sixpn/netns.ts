/**
 * A machine's network namespace is named after the machine, so the runtime (which creates it and starts
 * the container in it) and the host network (which plugs it into its 6PN network) find the same one
 * without asking each other.
 */
export const netnsName = (machineId: string) => `hangar-${machineId}`;

/** Where `ip netns` keeps the namespace, as the OCI config names it. */
export const netnsPath = (machineId: string) => `/var/run/netns/${netnsName(machineId)}`;
