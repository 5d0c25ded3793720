import type { FastifyInstance, FastifyRequest } from 'fastify';
import { byCreation, linkNextPage, pageQuery, paginate } from '../pagination.js';
import { principalOf, type RouteDeps } from '../route-context.js';
import { CreateVolumeBody, ExtendVolumeBody, UpdateVolumeBody } from '../schemas.js';
import * as wire from '../serialize.js';
import { parse } from '../validate.js';

type VolumeParams = { app_name: string; volume_id: string };
const params = (request: FastifyRequest) => request.params as VolumeParams;

export function volumeRoutes(app: FastifyInstance, { platform }: RouteDeps): void {
  const { volumes } = platform;
  const base = '/v1/apps/:app_name/volumes';
  const one = `${base}/:volume_id`;
  const read = (action: string) => ({ config: { rate: 'machine_read' as const, action } });
  const act = (action: string) => ({ config: { rate: 'machine_action' as const, action } });

  app.get(base, read('volumes.list'), async (request, reply) => {
    const { app_name } = request.params as { app_name: string };
    const query = pageQuery(request);
    const page = paginate(await volumes.list(principalOf(request), app_name), byCreation, query);
    linkNextPage(request, reply, page.next);
    return page.items.map(wire.volume);
  });

  app.post(base, act('volume.create'), async (request) => {
    const { app_name } = request.params as { app_name: string };
    const body = parse(CreateVolumeBody, request.body, 'body');
    const volume = await volumes.create(principalOf(request), app_name, {
      name: body.name,
      ...(body.region !== undefined ? { region: body.region } : {}),
      ...(body.size_gb !== undefined ? { sizeGb: body.size_gb } : {}),
      ...(body.encrypted !== undefined ? { encrypted: body.encrypted } : {}),
      ...(body.fstype !== undefined ? { fstype: body.fstype } : {}),
      ...(body.snapshot_retention !== undefined ? { snapshotRetention: body.snapshot_retention } : {}),
      ...(body.auto_backup_enabled !== undefined ? { autoBackupEnabled: body.auto_backup_enabled } : {}),
      ...(body.snapshot_id !== undefined ? { snapshotId: body.snapshot_id } : {}),
      ...(body.source_volume_id !== undefined ? { sourceVolumeId: body.source_volume_id } : {}),
    });
    return wire.volume(volume);
  });

  app.get(one, read('volume.get'), async (request) => {
    const { app_name, volume_id } = params(request);
    return wire.volume(await volumes.get(principalOf(request), app_name, volume_id));
  });

  // Fly's current API updates with PUT; the 2024 spec said POST. Both work.
  for (const method of ['PUT', 'POST'] as const) {
    app.route({
      method,
      url: one,
      config: { rate: 'machine_action', action: 'volume.update' },
      handler: async (request) => {
        const { app_name, volume_id } = params(request);
        const body = parse(UpdateVolumeBody, request.body, 'body');
        const volume = await volumes.update(principalOf(request), app_name, volume_id, {
          ...(body.snapshot_retention !== undefined ? { snapshotRetention: body.snapshot_retention } : {}),
          ...(body.auto_backup_enabled !== undefined ? { autoBackupEnabled: body.auto_backup_enabled } : {}),
        });
        return wire.volume(volume);
      },
    });
  }

  app.put(`${one}/extend`, act('volume.extend'), async (request) => {
    const { app_name, volume_id } = params(request);
    const body = parse(ExtendVolumeBody, request.body, 'body');
    const { volume, needsRestart } = await volumes.extend(
      principalOf(request),
      app_name,
      volume_id,
      body.size_gb,
    );
    return { volume: wire.volume(volume), needs_restart: needsRestart };
  });

  app.delete(one, act('volume.destroy'), async (request) => {
    const { app_name, volume_id } = params(request);
    return wire.volume(await volumes.destroy(principalOf(request), app_name, volume_id));
  });

  app.get(`${one}/snapshots`, read('volume.snapshots'), async (request, reply) => {
    const { app_name, volume_id } = params(request);
    const query = pageQuery(request);
    const list = await volumes.listSnapshots(principalOf(request), app_name, volume_id);
    const page = paginate(list, byCreation, query);
    linkNextPage(request, reply, page.next);
    return page.items.map(wire.snapshot);
  });

  app.post(`${one}/snapshots`, act('volume.snapshot'), async (request) => {
    const { app_name, volume_id } = params(request);
    return wire.snapshot(await volumes.createSnapshot(principalOf(request), app_name, volume_id));
  });
}
