import { constants } from 'node:os';
import { z } from 'zod';
import { MachineConfigSchema } from '../shared/machine-config.js';

/** Request bodies and queries of the Machines API. Unknown fields are accepted, as Fly's API does. */

export const CreateAppBody = z
  .looseObject({
    app_name: z.string().optional(),
    name: z.string().optional(),
    org_slug: z.string().min(1, 'org_slug is required (your default org is "personal")'),
    network: z.string().optional(),
  })
  .refine((b) => b.app_name !== undefined || b.name !== undefined, {
    message: 'app_name is required',
    path: ['app_name'],
  });

const createMachineFields = {
  config: MachineConfigSchema,
  name: z.string().optional(),
  region: z.string().optional(),
  skip_launch: z.boolean().optional(),
  skip_service_registration: z.boolean().optional(),
  lease_ttl: z.number().int().optional(),
  lsvd: z.boolean().optional(),
  min_secrets_version: z.number().int().nonnegative().optional(),
  skip_secrets: z.boolean().optional(),
};
export const CreateMachineBody = z.looseObject(createMachineFields);
export const UpdateMachineBody = z.looseObject({
  ...createMachineFields,
  current_version: z.string().optional(),
});

export const StopBody = z.looseObject({
  signal: z.string().optional(),
  timeout: z.union([z.string(), z.number()]).optional(),
});

/** Signal names Linux knows; numbers are accepted too (fly-go's kill sends `{"signal": 9}`). */
const SIGNALS = constants.signals as Record<string, number>;
export function signalName(value: string | number): string | undefined {
  if (typeof value === 'number') return Object.keys(SIGNALS).find((name) => SIGNALS[name] === value);
  const upper = value.toUpperCase();
  const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
  return name in SIGNALS ? name : undefined;
}
export const SignalBody = z.looseObject({
  signal: z.union([z.string(), z.number().int()]).refine((s) => signalName(s) !== undefined, {
    message: 'unknown signal; use a name such as "SIGTERM" or a number such as 15',
  }),
});

export const LeaseBody = z.looseObject({
  ttl: z.number().int().optional(),
  description: z.string().optional(),
});
export const MetadataValueBody = z.looseObject({ value: z.string() });
export const ExecBody = z
  .looseObject({
    command: z.array(z.string()).min(1).optional(),
    cmd: z.string().optional(),
    timeout: z.number().int().min(1).max(3600).optional(),
    stdin: z.string().optional(),
  })
  .refine((b) => b.command !== undefined || b.cmd !== undefined, {
    message: 'command is required',
    path: ['command'],
  });

export const CreateVolumeBody = z.looseObject({
  name: z.string({ error: 'name is required' }),
  region: z.string().optional(),
  size_gb: z.number().int().optional(),
  encrypted: z.boolean().optional(),
  fstype: z.enum(['ext4', 'raw']).optional(),
  snapshot_retention: z.number().int().optional(),
  auto_backup_enabled: z.boolean().optional(),
  snapshot_id: z.string().optional(),
  source_volume_id: z.string().optional(),
});
export const UpdateVolumeBody = z.looseObject({
  snapshot_retention: z.number().int().optional(),
  auto_backup_enabled: z.boolean().optional(),
});
export const ExtendVolumeBody = z.looseObject({ size_gb: z.number({ error: 'size_gb is required' }).int() });

export const SetSecretsBody = z.looseObject({ values: z.record(z.string(), z.string().nullable()) });
export const SetSecretBody = z.looseObject({ value: z.string() });

export const AllocateIpBody = z.looseObject({
  type: z.string({ error: 'type is required: one of v6, shared_v4, private_v6' }),
  region: z.string().optional(),
  org_slug: z.string().optional(),
  network: z.string().optional(),
  service_name: z.string().optional(),
});

export const CreateTokenBody = z.looseObject({
  type: z.enum(['org', 'deploy', 'readonly']),
  org_slug: z.string().min(1),
  app_name: z.string().optional(),
  name: z.string().max(200).optional(),
  expiry: z.string().optional(),
});
export const DeployTokenBody = z.looseObject({ expiry: z.string().optional() });
