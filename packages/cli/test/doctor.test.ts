// doctor: each finding from hand-made facts, then the whole command against a fake API.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cli, closedPort, expectCode, startFakeServer } from './helpers.js';

const { diagnoseApp } = await import('../src/doctor.js');
const { CLI_VERSION } = await import('../src/version.js');

const NOW = Date.parse('2026-12-01T12:00:00Z');
const SERVICE = { protocol: 'tcp', internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }] };

function machine(id: string, state: string, extra: Record<string, unknown> = {}) {
  return { id, name: id, state, region: 'local', instance_id: 'v', config: { image: 'x' }, ...extra };
}

const base = { app: 'acme', ips: [], secrets: [], leases: new Map(), now: NOW / 1000 };

test('a failed machine is a failure with the reason its events give', () => {
  const findings = diagnoseApp({
    ...base,
    machines: [
      machine('m1', 'failed', {
        events: [
          {
            type: 'start',
            status: 'failed',
            timestamp: NOW,
            request: { error: 'image 127.0.0.1:4281/acme/web:9 not found' },
          },
        ],
      }),
    ],
  });
  assert.deepEqual(findings, [
    {
      name: 'machine m1',
      status: 'fail',
      detail: 'failed: image 127.0.0.1:4281/acme/web:9 not found',
      fix: 'fix the cause, then: hangar machine start m1 -a acme (details: hangar machine status m1 -a acme)',
    },
  ]);
});

test('crashes, out-of-memory kills, critical checks, leases and stale secrets are each reported', () => {
  const exit = (code: number, extra = {}) => ({
    type: 'exit',
    status: 'stopped',
    timestamp: NOW - 60_000,
    request: { exit_event: { exit_code: code, requested_stop: false, ...extra }, restart_count: 2 },
  });
  const findings = diagnoseApp({
    ...base,
    machines: [
      machine('crash', 'stopped', { events: [exit(3)] }),
      machine('oom', 'started', { events: [exit(137, { oom_killed: true })] }),
      machine('sick', 'started', {
        checks: [{ name: 'http', status: 'critical', output: 'connection refused' }],
      }),
      machine('held', 'started'),
      machine('stale', 'started', {
        events: [{ type: 'start', status: 'started', timestamp: NOW - 3_600_000 }],
      }),
      machine('fine', 'stopped', { events: [exit(0, { requested_stop: true })] }),
    ],
    leases: new Map([
      ['held', { nonce: 'n', expires_at: NOW / 1000 + 30, owner: 'ci', description: 'deploy' }],
    ]),
    secrets: [{ name: 'API_KEY', updated_at: new Date(NOW - 60_000).toISOString() }],
  });
  const by = (name: string) => findings.filter((f) => f.name === `machine ${name}`);
  assert.match(
    by('crash')[0]?.detail ?? '',
    /^exited with code 3 at 2026-12-01T11:59:00Z \(restart 2\), state now stopped$/,
  );
  assert.equal(by('crash')[0]?.fix, 'read its output: hangar machine logs crash -a acme');
  assert.match(by('oom')[0]?.detail ?? '', /^was killed for lack of memory/);
  assert.match(by('oom')[0]?.fix ?? '', /--vm-memory/);
  assert.deepEqual(
    by('sick').map((f) => [f.status, f.detail]),
    [['fail', 'check http is critical: connection refused']],
  );
  assert.match(by('held')[0]?.detail ?? '', /^leased by ci \(deploy\) until 2026-12-01T12:00:30Z/);
  assert.equal(by('held')[0]?.fix, 'if nothing is using it: hangar machine leases clear held -a acme');
  assert.deepEqual(
    by('stale').map((f) => [f.status, f.detail, f.fix]),
    [
      [
        'warn',
        'runs with secrets older than the change of API_KEY',
        'apply them: hangar secrets deploy -a acme',
      ],
    ],
  );
  assert.deepEqual(
    by('fine').map((f) => f.status),
    ['ok'],
  );
});

test('services: no address, and nothing that can start, are reported', () => {
  const stopped = machine('m1', 'stopped', {
    config: { image: 'x', services: [{ ...SERVICE, autostart: false }] },
  });
  const findings = diagnoseApp({ ...base, machines: [stopped] });
  assert.deepEqual(
    findings.filter((f) => f.name !== 'machine m1').map((f) => [f.name, f.status]),
    [
      ['addresses', 'warn'],
      ['services', 'fail'],
    ],
  );
  const served = diagnoseApp({
    ...base,
    machines: [machine('m1', 'started', { config: { image: 'x', services: [SERVICE] } })],
    ips: [{ ip: 'fdaa:0:1::3', type: 'private_v6' }],
  });
  assert.deepEqual(
    served.map((f) => [f.name, f.status, f.detail]),
    [
      ['machine m1', 'ok', 'started'],
      ['addresses', 'ok', 'private_v6'],
    ],
  );
  assert.deepEqual(
    diagnoseApp({ ...base, machines: [] }).map((f) => [f.name, f.status]),
    [['machines', 'warn']],
  );
});

test('doctor: a healthy host and app pass; a failed machine fails with exit 1; no hangard says how to start it', async (t) => {
  let state = 'started';
  const server = await startFakeServer(t, (req) => {
    switch (req.path) {
      case '/healthz':
        return { body: { status: 'ok' } };
      case '/readyz':
        return { body: { status: 'ready', checks: { store: true } } };
      case '/v1/tokens/current':
        return {
          body: { tokens: [{ token_id: 'tok_1', type: 'org', org_slug: 'personal', apps: ['acme'] }] },
        };
      case '/v1/platform/version':
        return { body: { name: 'hangard', version: CLI_VERSION } };
      case '/v1/apps/acme':
        return { body: { id: 'a', name: 'acme' } };
      case '/v1/apps/acme/machines':
        return {
          body: [
            machine('m1', state, {
              events: [{ type: 'start', status: state, timestamp: NOW, request: { error: 'boom' } }],
            }),
          ],
        };
      case '/v1/apps/acme/ip_assignments':
        return { body: { ips: [] } };
      case '/v1/apps/acme/secrets':
        return { body: { secrets: [] } };
      default:
        return { status: 404, body: { error: 'machine m1 has no active lease', status: 'not_found' } };
    }
  });
  const healthy = await cli(['doctor', '-a', 'acme'], { apiUrl: server.url });
  expectCode(healthy, 0);
  assert.equal(
    healthy.stdout,
    [
      `[ok]   api: ${server.url} answers and is ready`,
      '[ok]   token: org token tok_1 of organization personal (from HANGAR_API_TOKEN), reaches 1 app(s)',
      `[ok]   version: hangard ${CLI_VERSION}, CLI ${CLI_VERSION}`,
      '[ok]   machine m1: started',
      'Everything looks fine.',
      '',
    ].join('\n'),
  );

  state = 'failed';
  const failed = await cli(['doctor', '-a', 'acme', '--json'], { apiUrl: server.url });
  expectCode(failed, 1);
  const report = JSON.parse(failed.stdout);
  assert.equal(report.ok, false);
  assert.deepEqual(report.checks.at(-1), {
    name: 'machine m1',
    status: 'fail',
    detail: 'failed: boom',
    fix: 'fix the cause, then: hangar machine start m1 -a acme (details: hangar machine status m1 -a acme)',
  });

  const port = await closedPort();
  const down = await cli(['doctor'], { apiUrl: `http://127.0.0.1:${port}` });
  expectCode(down, 1);
  assert.match(
    down.stdout,
    /^\[FAIL\] api: could not reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)\n {7}fix: start hangard/,
  );
});
