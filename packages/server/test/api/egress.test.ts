import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkEgressPolicy, egressElements } from '../../src/net/egress-policy.js';
import { createApp, startTestHangard } from '../helpers/hangard.js';

/**
 * The egress policy API (`/v1/apps/{app}/egress`): any token of the app reads it, only an org token
 * sets it, and what it accepts is checked with messages that say what to fix. What the rules make of it
 * is tested in test/net/ruleset.test.ts and, with real machines, in test/integration/egress.test.ts.
 */

test('egress policy: the default is on; an org token sets it, a deploy token may only read it', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'eg-api');
  const deploy = (await h.call('POST', '/v1/apps/eg-api/deploy_token', { expiry: '1h' })).body
    .token as string;

  const initial = await h.call('GET', '/v1/apps/eg-api/egress', undefined, { token: deploy });
  assert.equal(initial.status, 200, JSON.stringify(initial.body));
  assert.deepEqual(initial.body, { mode: 'on', allow: [] });

  const refused = await h.call('PUT', '/v1/apps/eg-api/egress', { mode: 'on' }, { token: deploy });
  assert.equal(refused.status, 403, JSON.stringify(refused.body));
  assert.equal(refused.body.status, 'forbidden');
  assert.match(refused.body.error, /a deploy token cannot set an app's egress policy; use an org token/);

  const set = await h.call('PUT', '/v1/apps/eg-api/egress', {
    mode: 'allow',
    allow: [{ cidr: '198.51.100.7', ports: [443, '8000-8010'] }, { cidr: '2001:DB8::/32' }],
  });
  assert.equal(set.status, 200, JSON.stringify(set.body));
  const stored = {
    mode: 'allow',
    allow: [{ cidr: '198.51.100.7/32', ports: ['443', '8000-8010'] }, { cidr: '2001:db8::/32' }],
  };
  assert.deepEqual(set.body, stored);
  assert.deepEqual(
    (await h.call('GET', '/v1/apps/eg-api/egress', undefined, { token: deploy })).body,
    stored,
  );
  // The deploy token still cannot change it, even to what it is.
  assert.equal((await h.call('PUT', '/v1/apps/eg-api/egress', stored, { token: deploy })).status, 403);

  const off = await h.call('PUT', '/v1/apps/eg-api/egress', { mode: 'off' });
  assert.deepEqual(off.body, { mode: 'off', allow: [] });
  assert.equal((await h.call('GET', '/v1/apps/nope/egress')).status, 404);
});

test('egress policy: bad input is a 400 that says what to fix', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'eg-bad');
  const cases: [unknown, RegExp][] = [
    [{ mode: 'sometimes' }, /mode: "sometimes" is not one of on, off, allow/],
    [{ mode: 'on', allow: [{ cidr: '198.51.100.0/24' }] }, /listed only with mode "allow"/],
    [
      { mode: 'allow', allow: [{ cidr: '198.51.100.1/24' }] },
      /allow\[0\]\.cidr: "198\.51\.100\.1\/24" is not an address or a CIDR without host bits/,
    ],
    [{ mode: 'allow', allow: [{ cidr: 'example.com' }] }, /allow\[0\]\.cidr/],
    [{ mode: 'allow', allow: [{ cidr: '10.0.0.0/8', ports: [] }] }, /allow\[0\]\.ports: leave it out/],
    [
      { mode: 'allow', allow: [{ cidr: '10.0.0.0/8', ports: [0] }] },
      /allow\[0\]\.ports\[0\]: "0" is not a port/,
    ],
    [{ mode: 'allow', allow: [{ cidr: '10.0.0.0/8', ports: ['90-80'] }] }, /"90-80" is not a port/],
    [{ mode: 'allow', allow: [{ cidr: '10.0.0.0/8', extra: 1 }] }, /extra/],
  ];
  for (const [body, message] of cases) {
    const response = await h.call('PUT', '/v1/apps/eg-bad/egress', body);
    assert.equal(response.status, 400, JSON.stringify(body));
    assert.equal(response.body.status, 'invalid_argument');
    assert.match(response.body.error, message, JSON.stringify(body));
  }
  // Nothing half-written: the policy is still the default.
  assert.deepEqual((await h.call('GET', '/v1/apps/eg-bad/egress')).body, { mode: 'on', allow: [] });
});

test('egress elements: destinations and ports made disjoint per machine', () => {
  const sources = { v4: '10.213.0.9', v6: 'fdaa:0:1:a7b:7d:0:9:2' };
  assert.deepEqual(egressElements(sources), {
    any4: ['10.213.0.9 . 0.0.0.0/0'],
    ports4: [],
    any6: ['fdaa:0:1:a7b:7d:0:9:2 . ::/0'],
    ports6: [],
  });
  assert.deepEqual(egressElements(sources, checkEgressPolicy({ mode: 'off' })), {
    any4: [],
    ports4: [],
    any6: [],
    ports6: [],
  });
  const policy = checkEgressPolicy({
    mode: 'allow',
    allow: [
      { cidr: '203.0.113.0/24' },
      { cidr: '203.0.113.128/25' },
      { cidr: '203.0.113.7', ports: [22] },
      { cidr: '198.51.100.0/24', ports: ['400-500'] },
      { cidr: '198.51.100.4', ports: ['450-600'] },
    ],
  });
  assert.deepEqual(egressElements({ v6: sources.v6 }, policy), {
    any4: [],
    ports4: [],
    any6: [],
    ports6: [],
  });
  assert.deepEqual(egressElements(sources, policy), {
    // The /25 and the port rule inside the /24 are already open.
    any4: ['10.213.0.9 . 203.0.113.0/24'],
    // The /32 keeps only the ports its /24 does not already open.
    ports4: [
      '10.213.0.9 . 198.51.100.0/24 . tcp . 400-500',
      '10.213.0.9 . 198.51.100.0/24 . udp . 400-500',
      '10.213.0.9 . 198.51.100.4/32 . tcp . 501-600',
      '10.213.0.9 . 198.51.100.4/32 . udp . 501-600',
    ],
    any6: [],
    ports6: [],
  });
});
