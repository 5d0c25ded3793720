import { constants } from 'node:os';
import { z } from 'zod';
import { LIMITS } from '../shared/limits.js';
import { MachineConfigSchema } from '../shared/machine-config.js';

/**
 * Request bodies and queries of the Machines API. Unknown fields are accepted, as Fly's API does. Every
 * string, list and number has a bound (shared/limits.ts); the 400 names the field and the bound.
 */
const name = z.string().max(LIMITS.nameChars, `at most ${LIMITS.nameChars} characters`);
const str = z.string().max(LIMITS.stringChars, `at most ${LIMITS.stringChars} characters`);
const value = z.string().max(LIMITS.valueChars, `at most ${LIMITS.valueChars} characters`);

export const CreateAppBody = z
  .looseObject({
    app_name: name.optional(),
    name: name.optional(),
    org_slug: name.min(1, 'org_slug is required (your default org is "personal")'),
    network: name.optional(),
  })
  .refine((b) => b.app_name !== undefined || b.name !== undefined, {
    message: 'app_name is required',
    path: ['app_name'],
  });

const createMachineFields = {
  config: MachineConfigSchema,
  name: name.optional(),
  region: name.optional(),
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
  current_version: name.optional(),
});

export const StopBody = z.looseObject({
  signal: name.optional(),
  timeout: z.union([z.string().max(64, 'at most 64 characters'), z.number()]).optional(),
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
  signal: z.union([name, z.number().int()]).refine((s) => signalName(s) !== undefined, {
    message: 'unknown signal; use a name such as "SIGTERM" or a number such as 15',
  }),
});

export const LeaseBody = z.looseObject({
  ttl: z.number().int().optional(),
  description: str.optional(),
});
export const MetadataValueBody = z.looseObject({ value });
export const ExecBody = z
  .looseObject({
    command: z.array(str).min(1).max(LIMITS.listItems, `at most ${LIMITS.listItems} items`).optional(),
    cmd: str.optional(),
    timeout: z.number().int().min(1).max(3600).optional(),
    stdin: z.string().optional(), // bounded by the body limit
  })
  .refine((b) => b.command !== undefined || b.cmd !== undefined, {
    message: 'command is required',
    path: ['command'],
  });

export const CreateVolumeBody = z.looseObject({
  name: z
    .string({ error: 'name is required' })
    .max(LIMITS.nameChars, `at most ${LIMITS.nameChars} characters`),
  region: name.optional(),
  size_gb: z.number().int().optional(),
  encrypted: z.boolean().optional(),
  fstype: z.enum(['ext4', 'raw']).optional(),
  snapshot_retention: z.number().int().optional(),
  auto_backup_enabled: z.boolean().optional(),
  snapshot_id: name.optional(),
  source_volume_id: name.optional(),
});
export const UpdateVolumeBody = z.looseObject({
  snapshot_retention: z.number().int().optional(),
  auto_backup_enabled: z.boolean().optional(),
});
export const ExtendVolumeBody = z.looseObject({ size_gb: z.number({ error: 'size_gb is required' }).int() });

export const SetSecretsBody = z.looseObject({
  values: z
    .record(name, value.nullable())
    .refine((values) => Object.keys(values).length <= LIMITS.mapEntries, {
      message: `at most ${LIMITS.mapEntries} secrets at once`,
    }),
});
export const SetSecretBody = z.looseObject({ value });

/** A PEM chain or key: a few KB; the service bounds them again. */
const pem = z.string().max(64 * 1024, 'at most 65536 characters');
export const ImportCertificateBody = z.looseObject({
  hostname: name.min(1, 'hostname is required, e.g. www.example.com'),
  fullchain: pem.min(1, 'fullchain is required: the certificate chain in PEM, leaf first'),
  private_key: pem.min(1, "private_key is required: the leaf's private key in PEM"),
});

export const AllocateIpBody = z.looseObject({
  type: z.string({ error: 'type is required: one of v6, shared_v4, private_v6' }).max(64),
  region: name.optional(),
  org_slug: name.optional(),
  network: name.optional(),
  service_name: name.optional(),
});

export const CreateTokenBody = z.looseObject({
  type: z.enum(['org', 'deploy', 'readonly']),
  org_slug: name.min(1),
  app_name: name.optional(),
  name: z.string().max(200).optional(),
  expiry: z.string().max(64, 'at most 64 characters').optional(),
});
export const DeployTokenBody = z.looseObject({
  expiry: z.string().max(64, 'at most 64 characters').optional(),
});
