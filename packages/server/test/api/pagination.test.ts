import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MachinesClient } from '@hangar/sdk';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { type ApiResponse, createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';

// Pages of the lists that grow, through the API (over the test FAKE runtime, see the helper).

/** Every page of an array-shaped list, following the next-page header; also the cursors seen. */
async function allPages(h: TestHangard, path: string, limit: number) {
  const items: { id?: string; version?: string }[] = [];
  const pages: number[] = [];
  let url = `${path}${path.includes('?') ? '&' : '?'}limit=${limit}`;
  for (let guard = 0; guard < 100; guard++) {
    const answer = await h.call('GET', url);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.ok(Array.isArray(answer.body), 'an array-shaped list stays an array');
    assert.ok(answer.body.length <= limit);
    items.push(...answer.body);
    pages.push(answer.body.length);
    const next = answer.headers.get('hangar-next-cursor');
    if (!next) {
      assert.equal(answer.headers.get('link'), null);
      return { items, pages };
    }
    assert.match(answer.headers.get('link') ?? '', new RegExp(`cursor=${next}.*rel="next"`));
    url = `${path}${path.includes('?') ? '&' : '?'}limit=${limit}&cursor=${next}`;
  }
  assert.fail('more pages than expected');
}

function refusedWith(answer: ApiResponse, pattern: RegExp): void {
  assert.equal(answer.status, 400, JSON.stringify(answer.body));
  assert.equal(answer.body.status, 'invalid_argument');
  assert.match(answer.body.error, pattern);
}

test('machines page by creation order; inserts between pages are neither skipped nor repeated', async (t) => {
  const h = await startTestHangard(t, { runtime: new FakeRuntime() });
  await createApp(h, 'pages');
  const created: string[] = [];
  const create = async () => {
    const answer = await h.call('POST', '/v1/apps/pages/machines', {
      config: { image: 'img:1' },
      skip_launch: true,
    });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    created.push(answer.body.id);
  };
  for (let i = 0; i < 7; i++) await create();

  // Whole, without paging: what a client that never pages sees (the default page is the largest).
  const whole = await h.call('GET', '/v1/apps/pages/machines');
  assert.equal(whole.body.length, 7);
  assert.equal(whole.headers.get('hangar-next-cursor'), null);
  // Oldest first: by creation time, then id (two creates in one millisecond are ordered by id).
  const order = whole.body.map((m: { id: string }) => m.id);
  assert.deepEqual([...order].sort(), [...created].sort());
  const times = whole.body.map((m: { created_at: string }) => m.created_at);
  assert.deepEqual(times, [...times].sort());

  const { items, pages } = await allPages(h, '/v1/apps/pages/machines', 3);
  assert.deepEqual(pages, [3, 3, 1]);
  assert.deepEqual(
    items.map((m) => m.id),
    order,
    'the pages, one after the other, are the whole list',
  );

  // Page 1, then two creates, then the rest: the new machines come at the end, once each.
  const first = await h.call('GET', '/v1/apps/pages/machines?limit=4');
  const cursor = first.headers.get('hangar-next-cursor')!;
  assert.ok(cursor);
  await create();
  await create();
  const seen = first.body.map((m: { id: string }) => m.id);
  let next: string | null = cursor;
  while (next) {
    const page = await h.call('GET', `/v1/apps/pages/machines?limit=4&cursor=${next}`);
    seen.push(...page.body.map((m: { id: string }) => m.id));
    next = page.headers.get('hangar-next-cursor');
  }
  assert.equal(seen.length, created.length, 'no machine twice');
  assert.deepEqual([...seen].sort(), [...created].sort(), 'every machine once, the new ones too');
  assert.deepEqual(seen.slice(0, 4), order.slice(0, 4));

  // Filters apply before paging.
  const filtered = await allPages(h, '/v1/apps/pages/machines?state=created', 5);
  assert.equal(filtered.items.length, 9);

  // Bad limits and cursors: 400s that name the bound or the fix.
  refusedWith(
    await h.call('GET', '/v1/apps/pages/machines?limit=0'),
    /limit: expected a whole number from 1 to 1000/,
  );
  refusedWith(await h.call('GET', '/v1/apps/pages/machines?limit=1001'), /from 1 to 1000/);
  refusedWith(await h.call('GET', '/v1/apps/pages/machines?limit=abc'), /from 1 to 1000/);
  for (const bad of ['nonsense', 'Yzk6eA', '!!!', 'a'.repeat(2000)]) {
    refusedWith(
      await h.call('GET', `/v1/apps/pages/machines?cursor=${bad}`),
      /cursor: .* is not a cursor this API handed out; pass the hangar-next-cursor header/,
    );
  }
  // Positive control: the cursor handed out is accepted.
  assert.equal((await h.call('GET', `/v1/apps/pages/machines?cursor=${cursor}`)).status, 200);
});

test('events and versions page newest first; apps, tokens, volumes, snapshots, ips and secrets page too', async (t) => {
  const h = await startTestHangard(t, { runtime: new FakeRuntime() });
  await createApp(h, 'pages');
  const machine = await h.call('POST', '/v1/apps/pages/machines', {
    config: { image: 'img:1' },
    skip_launch: true,
  });
  const id = machine.body.id as string;
  for (let i = 0; i < 4; i++) {
    const update = await h.call('POST', `/v1/apps/pages/machines/${id}`, {
      config: { image: 'img:1', env: { N: String(i) } },
      skip_launch: true,
    });
    assert.equal(update.status, 200, JSON.stringify(update.body));
  }
  const versions = await allPages(h, `/v1/apps/pages/machines/${id}/versions`, 2);
  assert.deepEqual(versions.pages, [2, 2, 1]);
  const order = versions.items.map((v) => v.version!);
  assert.deepEqual(order, [...order].sort().reverse(), 'newest first');
  assert.equal(new Set(order).size, 5);
  const events = await allPages(h, `/v1/apps/pages/machines/${id}/events`, 2);
  assert.equal(events.items.length, 5, 'a launch and four updates');
  // Fly's default: the newest 100 events without a limit.
  assert.equal((await h.call('GET', `/v1/apps/pages/machines/${id}/events`)).body.length, 5);

  for (const name of ['pages2', 'pages3', 'pages4']) await createApp(h, name);
  const apps: string[] = [];
  let cursor = '';
  for (;;) {
    const page = await h.call(
      'GET',
      `/v1/apps?org_slug=personal&limit=3${cursor ? `&cursor=${cursor}` : ''}`,
    );
    assert.equal(page.status, 200, JSON.stringify(page.body));
    assert.equal(page.body.total_apps, 4, 'total_apps counts them all');
    apps.push(...page.body.apps.map((a: { name: string }) => a.name));
    if (!page.body.next_cursor) break;
    cursor = page.body.next_cursor;
  }
  assert.deepEqual([...apps].sort(), ['pages', 'pages2', 'pages3', 'pages4'], 'each app once');

  for (let i = 0; i < 2; i++) {
    const token = await h.call('POST', '/v1/tokens', { type: 'readonly', org_slug: 'personal' });
    assert.equal(token.status, 201, JSON.stringify(token.body));
  }
  const tokensPage = await h.call('GET', '/v1/tokens?org_slug=personal&limit=2');
  assert.equal(tokensPage.body.tokens.length, 2);
  const tokensRest = await h.call(
    'GET',
    `/v1/tokens?org_slug=personal&limit=2&cursor=${tokensPage.body.next_cursor}`,
  );
  assert.ok(tokensRest.body.tokens.length >= 1);
  const tokenIds = [...tokensPage.body.tokens, ...tokensRest.body.tokens].map((tk: { id: string }) => tk.id);
  assert.equal(new Set(tokenIds).size, tokenIds.length, 'no token twice');

  const secrets = await h.call('POST', '/v1/apps/pages/secrets', { values: { A: '1', B: '2', C: '3' } });
  assert.equal(secrets.status, 200, JSON.stringify(secrets.body));
  const secretsPage = await h.call('GET', '/v1/apps/pages/secrets?limit=2');
  assert.equal(secretsPage.body.secrets.length, 2);
  assert.ok(secretsPage.body.next_cursor);
  const secretsRest = await h.call(
    'GET',
    `/v1/apps/pages/secrets?limit=2&cursor=${secretsPage.body.next_cursor}`,
  );
  assert.equal(secretsRest.body.secrets.length, 1);
  assert.equal(secretsRest.body.next_cursor, undefined);

  for (let i = 0; i < 3; i++) {
    const volume = await h.call('POST', '/v1/apps/pages/volumes', { name: `v${i}`, size_gb: 1 });
    assert.equal(volume.status, 200, JSON.stringify(volume.body));
  }
  const volumes = await allPages(h, '/v1/apps/pages/volumes', 2);
  assert.deepEqual(volumes.pages, [2, 1]);
  const volumeId = volumes.items[0]!.id!;
  for (let i = 0; i < 3; i++) {
    assert.equal((await h.call('POST', `/v1/apps/pages/volumes/${volumeId}/snapshots`, {})).status, 200);
  }
  const snapshots = await allPages(h, `/v1/apps/pages/volumes/${volumeId}/snapshots`, 2);
  assert.equal(snapshots.items.length, 3);
  assert.equal((await h.call('GET', '/v1/apps/pages/ip_assignments?limit=5')).body.ips.length, 0);
});

test('the SDK lists every page: machines, volumes, versions and apps', async (t) => {
  const h = await startTestHangard(t, { runtime: new FakeRuntime() });
  const client = new MachinesClient({ baseUrl: h.url, token: h.token, rateLimit: false });
  await createApp(h, 'sdk-pages');
  await createApp(h, 'sdk-pages2');
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const machine = await client.machines.create('sdk-pages', {
      config: { image: 'img:1' },
      skip_launch: true,
    });
    ids.push(machine.id);
  }
  const listed = await client.machines.list('sdk-pages', { pageSize: 2 });
  assert.deepEqual(listed.map((m) => m.id).sort(), [...ids].sort());
  assert.equal(new Set(listed.map((m) => m.id)).size, 5);
  const apps = await client.apps.list('personal', { pageSize: 1 });
  assert.deepEqual(apps.apps.map((a) => a.name).sort(), ['sdk-pages', 'sdk-pages2']);
  assert.equal(apps.total_apps, 2);
  assert.equal(apps.next_cursor, undefined);
  for (let i = 0; i < 2; i++) await client.volumes.create('sdk-pages', { name: `v${i}`, size_gb: 1 });
  assert.equal((await client.volumes.list('sdk-pages', { pageSize: 1 })).length, 2);
  assert.equal((await client.machines.versions('sdk-pages', ids[0]!)).length, 1);
});
