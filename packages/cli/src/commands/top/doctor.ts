import { isMachinesApiError, type Lease, type MachinesClient } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { diagnoseApp, type Finding } from '../../doctor.js';
import { appMachines } from '../../groups.js';
import type { Output } from '../../output.js';
import { CLI_VERSION } from '../../version.js';

const MARK: Record<Finding['status'], string> = { ok: '[ok]  ', warn: '[warn]', fail: '[FAIL]' };

function print(out: Output, f: Finding): void {
  if (out.json) return;
  out.line(`${MARK[f.status]} ${f.name}: ${f.detail}`);
  if (f.fix && f.status !== 'ok') out.line(`       fix: ${f.fix}`);
}

/** The host: reachable, ready, the token and its scope, versions. Stops early when nothing else can work. */
async function diagnoseHost(
  api: MachinesClient,
  apiUrl: string,
  tokenSource: string,
  add: (f: Finding) => void,
): Promise<boolean> {
  try {
    await api.platform.health();
  } catch (err) {
    add({
      name: 'api',
      status: 'fail',
      detail:
        isMachinesApiError(err, 'network_error') && err.detail
          ? err.detail
          : `no answer from ${apiUrl} (${err instanceof Error ? err.message : String(err)})`,
      fix: 'start hangard (./scripts/start.sh on the host), or point --api-url / HANGAR_API_URL / `hangar auth login --url` at it',
    });
    return false;
  }
  const ready = await api.platform.readiness().catch(() => undefined);
  const down = Object.entries(ready?.checks ?? {})
    .filter(([, up]) => !up)
    .map(([name]) => name);
  add(
    ready?.ready === false
      ? {
          name: 'api',
          status: 'fail',
          detail: `${apiUrl} answers but is not ready: ${down.join(', ') || 'unknown'} down`,
          fix: 'read hangard’s log (journalctl or its stderr) for why',
        }
      : { name: 'api', status: 'ok', detail: `${apiUrl} answers and is ready` },
  );

  if (tokenSource === 'none') {
    add({
      name: 'token',
      status: 'fail',
      detail: 'no token configured',
      fix: 'run `hangar auth login`, or set HANGAR_API_TOKEN',
    });
    return false;
  }
  let current: Awaited<ReturnType<MachinesClient['tokens']['current']>>['tokens'][number] | undefined;
  try {
    current = (await api.tokens.current()).tokens[0];
  } catch (err) {
    if (isMachinesApiError(err) && err.status === 401) {
      add({
        name: 'token',
        status: 'fail',
        detail: `the token from ${tokenSource} is refused (revoked, expired or for another hangard)`,
        fix: 'get a valid one (`hangar tokens create org` where a token works, or the host’s personal.token) and `hangar auth login`',
      });
      return false;
    }
    throw err;
  }
  const scope =
    current?.type === 'deploy'
      ? `limited to app ${current.apps.join(', ')}`
      : current?.type === 'readonly'
        ? 'read-only: every change will be refused'
        : `reaches ${current?.apps.length ?? 0} app(s)`;
  add({
    name: 'token',
    status: current?.type === 'readonly' ? 'warn' : 'ok',
    detail: `${current?.type} token ${current?.token_id} of organization ${current?.org_slug} (from ${tokenSource}), ${scope}`,
    ...(current?.type === 'readonly' ? { fix: 'use an org or deploy token to make changes' } : {}),
  });

  try {
    const server = await api.platform.version();
    add(
      server.version === CLI_VERSION
        ? { name: 'version', status: 'ok', detail: `hangard ${server.version}, CLI ${CLI_VERSION}` }
        : {
            name: 'version',
            status: 'warn',
            detail: `hangard ${server.version}, CLI ${CLI_VERSION}: commands may expect what the other lacks`,
            fix: 'use the CLI built with this hangard (the same checkout or release)',
          },
    );
  } catch (err) {
    if (!isMachinesApiError(err, 'not_found')) throw err;
    add({
      name: 'version',
      status: 'warn',
      detail: 'the server does not say its version: not a hangard, or an older one',
      fix: 'check --api-url',
    });
  }
  return true;
}

async function leasesOf(api: MachinesClient, app: string, ids: string[]): Promise<Map<string, Lease>> {
  const leases = new Map<string, Lease>();
  for (const id of ids) {
    try {
      leases.set(id, await api.machines.getLease(app, id));
    } catch (err) {
      if (!isMachinesApiError(err, 'not_found')) throw err;
    }
  }
  return leases;
}

export default defineVerb({
  usage: 'doctor',
  summary: 'Check what is wrong with this hangard, the token, and an app (-a), and say how to fix it',
  description:
    'Check, through the API only: that hangard answers and is ready, that the token is valid and what it ' +
    'may reach, that hangard and the CLI are the same version; and with -a, the app’s machines (failed ' +
    'boots with their reason, crashes, failing checks, leases left behind, secrets changed since they ' +
    'booted) and its services (no address, nothing that can start). Each problem comes with a fix. Exits ' +
    '1 when something fails.',
  examples: ['hangar doctor', 'hangar doctor -a acme --json'],
  app: true,
  json: true,
  async run({ opts, io, client, config, out }) {
    const findings: Finding[] = [];
    const add = (f: Finding) => {
      findings.push(f);
      print(out, f);
    };
    const { apiUrl, tokenSource } = config();
    const api = client();
    const hostOk = await diagnoseHost(api, apiUrl, tokenSource, add);
    const app = (opts as { app?: string }).app?.trim() || io.env.FLY_APP?.trim();
    if (hostOk && app) {
      try {
        await api.apps.get(app);
        const machines = appMachines(await api.machines.list(app));
        // The list carries the 10 newest events of each machine, which is what the findings read.
        const [ips, secrets, leases] = await Promise.all([
          api.ipAssignments.list(app),
          api.secrets.list(app),
          leasesOf(
            api,
            app,
            machines.map((m) => m.id),
          ),
        ]);
        for (const f of diagnoseApp({
          app,
          machines,
          ips: ips.ips,
          secrets: secrets.secrets,
          leases,
          now: Date.now() / 1000,
        }))
          add(f);
      } catch (err) {
        if (!isMachinesApiError(err) || (err.status !== 404 && err.status !== 403)) throw err;
        add({
          name: 'app',
          status: 'fail',
          detail: `app ${app}: ${err.detail ?? err.message}`,
          fix: 'check the name: hangar apps list',
        });
      }
    }
    const failed = findings.some((f) => f.status === 'fail');
    if (out.json) out.printJson({ ok: !failed, checks: findings });
    else if (!failed)
      out.line(
        findings.some((f) => f.status === 'warn')
          ? 'No failures; see the warnings above.'
          : 'Everything looks fine.',
      );
    return failed ? 1 : 0;
  },
});
