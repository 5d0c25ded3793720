// The pure parts of `hangar tenants`: which images are copied into the tenant's space, and what a
// tenant's machine config is made of. (The whole command runs against a real hangard in the server's
// integration tests.)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cli, expectCode } from './helpers.js';

const { tenantImage, tenantConfig } = await import('../src/commands/tenants/create.js');

test('images of the template’s registry space move to the tenant’s; others stay', () => {
  assert.equal(tenantImage('127.0.0.1:4281/tmpl/web:1', 'tmpl', 'acme'), '127.0.0.1:4281/acme/web:1');
  assert.equal(
    tenantImage('localhost:4281/tmpl/a/b@sha256:00', 'tmpl', 'acme'),
    'localhost:4281/acme/a/b@sha256:00',
  );
  assert.equal(tenantImage('127.0.0.1:4281/other/web:1', 'tmpl', 'acme'), undefined);
  assert.equal(tenantImage('nginx:1.27', 'tmpl', 'acme'), undefined);
  assert.equal(tenantImage('registry.example/tmpl/web:1', 'tmpl', 'acme'), undefined);
});

test('a tenant’s config: autostop and autostart on, tenant metadata, no template volume', () => {
  const config = tenantConfig(
    {
      image: 'old',
      services: [{ protocol: 'tcp', internal_port: 8080, autostop: 'off', autostart: false }],
      mounts: [{ volume: 'vol_template', path: '/data', name: 'data' }],
      metadata: { fly_process_group: 'app' },
    },
    'new',
    'acme',
    'tmpl',
  );
  assert.equal(config.image, 'new');
  assert.deepEqual(config.services?.[0], {
    protocol: 'tcp',
    internal_port: 8080,
    autostop: 'stop',
    autostart: true,
  });
  assert.deepEqual(config.mounts, [{ path: '/data', name: 'data' }]);
  assert.deepEqual(config.metadata, {
    fly_process_group: 'app',
    hangar_tenant: 'acme',
    hangar_template: 'tmpl',
  });
});

test('tenants create refuses a customer name that cannot name an app', async () => {
  const result = await cli(['tenants', 'create', 'Acme Corp', '--template', 'tmpl']);
  expectCode(result, 1);
  assert.match(result.stderr, /^Error: invalid customer name "Acme Corp"\nHint: use lowercase letters/);
});
