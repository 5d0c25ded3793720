import { isMachinesApiError, type Lease, type MachinesClient } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { formatTime } from '../../output.js';

/** The machine's live lease, or null when it has none. */
async function leaseOf(api: MachinesClient, app: string, id: string): Promise<Lease | null> {
  try {
    return await api.machines.getLease(app, id);
  } catch (err) {
    // 404 means "no lease" for a machine that exists; an unknown machine says so in its message.
    if (isMachinesApiError(err, 'not_found') && /lease/i.test(err.detail ?? '')) return null;
    throw err;
  }
}

export default defineVerb({
  usage: 'leases <action> <id...>',
  aliases: ['lease'],
  summary: 'View (view) or remove (clear) the leases on machines',
  description:
    'A lease locks a machine against changes by anyone without its nonce (deploys and updates take one). ' +
    '`view` shows who holds it and until when; `clear` releases it, for a lease left behind by an ' +
    'interrupted command.',
  examples: [
    'hangar machine leases view 148ed193b95e89 -a acme',
    'hangar machine leases clear 148ed193b95e89 -a acme',
  ],
  app: true,
  json: true,
  async run({ app, arg, args, client, out }) {
    const appName = app();
    const action = arg(0);
    if (action !== 'view' && action !== 'clear') {
      throw new CliError(`unknown leases action "${action}"`, 'use `leases view ID` or `leases clear ID`');
    }
    const api = client();
    const found: Array<{ machine_id: string; lease: Lease | null }> = [];
    for (const id of args(1)) found.push({ machine_id: id, lease: await leaseOf(api, appName, id) });

    if (action === 'view') {
      if (out.json) return out.printJson(found);
      out.table(
        ['Machine', 'Nonce', 'Owner', 'Description', 'Expires', 'Version'],
        found.map(({ machine_id, lease }) =>
          lease
            ? [
                machine_id,
                lease.nonce,
                lease.owner,
                lease.description,
                formatTime(lease.expires_at * 1000),
                lease.version,
              ]
            : [machine_id, '(no lease)'],
        ),
      );
      return;
    }
    for (const { machine_id, lease } of found) {
      if (lease) await api.machines.releaseLease(appName, machine_id, lease.nonce);
    }
    if (out.json)
      return out.printJson(found.map(({ machine_id, lease }) => ({ machine_id, cleared: lease !== null })));
    for (const { machine_id, lease } of found) {
      out.line(
        lease
          ? `Cleared the lease on ${machine_id} (held by ${lease.owner ?? 'unknown'})`
          : `No lease on ${machine_id}`,
      );
    }
  },
});
