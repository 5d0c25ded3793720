// What `hangar deploy` sends: leases around every update, the lease nonce and current_version on each,
// rollback to the previous config when a machine does not come up, and leases released either way.
// Against a fake API (the real end-to-end run is in the server's integration tests).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cli, expectCode, type RecordedRequest, startFakeServer } from './helpers.js';

const OLD_IMAGE = '127.0.0.1:4281/shop/shop:old';
const NEW_IMAGE = '127.0.0.1:4281/shop/shop:new';

const FLY_TOML = `
app = "shop"
[deploy]
  strategy = "rolling"
  max_unavailable = 1
  wait_timeout = "2s"
[http_service]
  internal_port = 8080
`;

function machine(id: string, version: string, image: string, state = 'started') {
  return {
    id,
    name: `m-${id}`,
    state,
    region: 'local',
    instance_id: version,
    config: { image, metadata: { fly_process_group: 'app' } },
  };
}

/** A fake API with three started machines; `broken` machines never reach started after their update. */
async function fakeApp(t: Parameters<typeof startFakeServer>[0], broken: Set<string> = new Set()) {
  const versions = new Map([
    ['aaa', 'v1-aaa'],
    ['bbb', 'v1-bbb'],
    ['ccc', 'v1-ccc'],
  ]);
  const images = new Map([...versions.keys()].map((id) => [id, OLD_IMAGE]));
  let n = 0;
  return startFakeServer(t, (req) => {
    const m = /^\/v1\/apps\/shop(?:\/machines(?:\/(\w+)(?:\/(\w+))?)?)?$/.exec(req.path);
    if (!m) return { status: 404, body: { error: 'not found' } };
    const [, id, action] = m;
    if (!id) {
      if (req.path === '/v1/apps/shop') return { body: { id: 'x', name: 'shop' } };
      return { body: [...versions].map(([mid, v]) => machine(mid, v, images.get(mid) ?? '')) };
    }
    if (action === 'lease') {
      if (req.method === 'DELETE') return { body: { ok: true } };
      return { body: { status: 'success', data: { nonce: `nonce-${id}`, expires_at: 0 } } };
    }
    if (action === 'wait') {
      const down = broken.has(id) && images.get(id) === NEW_IMAGE;
      return down
        ? { status: 408, body: { error: 'machine failed to reach desired state' } }
        : { body: { ok: true } };
    }
    if (!action && req.method === 'POST') {
      const body = req.body as { config: { image: string } };
      versions.set(id, `v${++n}-${id}`);
      images.set(id, body.config.image);
      return { body: machine(id, versions.get(id) ?? '', body.config.image) };
    }
    if (!action) {
      const down = broken.has(id) && images.get(id) === NEW_IMAGE;
      return { body: machine(id, versions.get(id) ?? '', images.get(id) ?? '', down ? 'failed' : 'started') };
    }
    return { status: 404, body: { error: 'unexpected' } };
  });
}

const deployArgs = ['deploy', '-c', '/app/fly.toml', '--image', NEW_IMAGE];
const files = { [`${process.cwd()}/app/fly.toml`]: FLY_TOML, '/app/fly.toml': FLY_TOML };
const updates = (requests: RecordedRequest[]) =>
  requests.filter((r) => r.method === 'POST' && /^\/v1\/apps\/shop\/machines\/\w+$/.test(r.path));

test('deploy updates every machine under its lease, then releases the leases', async (t) => {
  const server = await fakeApp(t);
  const result = await cli(deployArgs, { apiUrl: server.url, files });
  expectCode(result, 0);
  const leased = server.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/lease'));
  assert.deepEqual(
    leased.map((r) => r.path.split('/')[5]),
    ['aaa', 'bbb', 'ccc'],
  );
  const sent = updates(server.requests);
  assert.equal(sent.length, 3);
  for (const update of sent) {
    const id = update.path.split('/')[5];
    assert.equal(update.headers['fly-machine-lease-nonce'], `nonce-${id}`);
    const body = update.body as { current_version: string; config: { image: string; metadata: object } };
    assert.equal(body.current_version, `v1-${id}`);
    assert.equal(body.config.image, NEW_IMAGE);
    assert.deepEqual(body.config.metadata, { fly_platform_version: 'v2', fly_process_group: 'app' });
  }
  const released = server.requests.filter((r) => r.method === 'DELETE' && r.path.endsWith('/lease'));
  assert.equal(released.length, 3);
  assert.match(result.stdout, /^Deployed 127\.0\.0\.1:4281\/shop\/shop:new to shop$/m);
});

test('a machine that does not come up: every updated machine goes back, and the error says so', async (t) => {
  const server = await fakeApp(t, new Set(['bbb']));
  const result = await cli(deployArgs, { apiUrl: server.url, files });
  expectCode(result, 1);
  assert.match(
    result.stderr,
    /^Error: deploy failed: Machine bbb \[app\] did not start \(state failed\).*2 machines rolled back to the previous version\. The previous version is still serving\.$/m,
  );
  const sent = updates(server.requests);
  // aaa and bbb updated (one at a time), ccc never touched; then bbb and aaa back to the old image.
  assert.deepEqual(
    sent.map((r) => [r.path.split('/')[5], (r.body as { config: { image: string } }).config.image]),
    [
      ['aaa', NEW_IMAGE],
      ['bbb', NEW_IMAGE],
      ['bbb', OLD_IMAGE],
      ['aaa', OLD_IMAGE],
    ],
  );
  for (const r of sent) assert.equal(r.headers['fly-machine-lease-nonce'], `nonce-${r.path.split('/')[5]}`);
  assert.equal(server.requests.filter((r) => r.method === 'DELETE' && r.path.endsWith('/lease')).length, 3);
});

test('deploy --help has an example, and a missing fly.toml is one error with a hint', async () => {
  const help = await cli(['deploy', '--help']);
  expectCode(help, 0);
  assert.match(help.stdout, /Example:\n {2}\$ hangar deploy/);
  const missing = await cli(['deploy', '-c', '/nowhere/fly.toml']);
  expectCode(missing, 1);
  assert.equal(
    missing.stderr,
    'Error: cannot read /nowhere/fly.toml\nHint: run hangar deploy in the app’s directory, or pass -c PATH/fly.toml\n',
  );
});

test('deploy to an app that does not exist says how to create it', async (t) => {
  const server = await startFakeServer(t, () => ({ status: 404, body: { error: 'app not found' } }));
  const result = await cli(deployArgs, { apiUrl: server.url, files });
  expectCode(result, 1);
  assert.equal(
    result.stderr,
    'Error: app shop does not exist\nHint: create it first: hangar apps create shop\n',
  );
});
