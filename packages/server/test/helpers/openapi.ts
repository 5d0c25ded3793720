import { AssertionError } from 'node:assert';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { ERROR_HTTP_STATUS } from '../../src/shared/errors.js';

/**
 * Validates Hangar's responses against the component schemas of Fly's published Machines OpenAPI spec,
 * kept in the repository as test data (test/fixtures/fly-machines-openapi.json; its README names the
 * source and how it was extracted).
 *
 * The schemas are used as published, except for the named adjustments in SPEC_EXCEPTIONS below. Each one
 * is a documented disagreement between the 2.0-derived spec and what Fly's API (and its Go client)
 * actually send; nothing else is relaxed.
 */

/** The schemas the conformance test needs, extracted unchanged from Fly's spec. */
export const SPEC_PATH = fileURLToPath(new URL('../fixtures/fly-machines-openapi.json', import.meta.url));

type JsonSchema = { [key: string]: unknown };
type Schemas = Record<string, JsonSchema>;

export interface SpecException {
  /** Short name, printed by the conformance test. */
  name: string;
  /** What is adjusted: a component schema (and property) or the validated body. */
  target: string;
  /** Why, with the reference that justifies it. */
  reason: string;
}

/** Hangar's stable error codes travel in the error body's `status` (src/shared/errors.ts). */
const HANGAR_ERROR_CODES = Object.keys(ERROR_HTTP_STATUS);

/** The only departures from the spec, each applied by one function below. */
export const SPEC_EXCEPTIONS: readonly SpecException[] = [
  {
    name: 'null-means-unset',
    target: 'every response body',
    reason:
      'the spec (converted from Swagger 2.0) has no `nullable`, but Fly returns null for unset fields ' +
      '(a detached volume has `attached_machine_id: null`): null-valued properties are dropped before validating',
  },
  {
    name: 'list-app-network-is-a-string',
    target: 'ListApp.network',
    reason: 'typed object in the spec, but Fly sends the network name as a string',
  },
  {
    name: 'error-status-codes',
    target: 'main.statusCode (ErrorResponse.status)',
    reason:
      'the spec lists only unknown/insufficient_capacity; fly-go also reads name_taken and ' +
      `Hangar sends its stable error codes there: ${HANGAR_ERROR_CODES.join(', ')}`,
  },
  {
    name: 'autostop-suspend',
    target: 'api.MachineService.autostop',
    reason: 'boolean in the spec, but Fly encodes autostop=suspend as the string "suspend" in responses',
  },
];

// ---- the adjustments (one function per SPEC_EXCEPTIONS entry) -------------------------------------

/** null-means-unset: removes null-valued object properties, at any depth. Array items are kept as they are. */
function dropNullProperties(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropNullProperties);
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    if (child !== null) out[key] = dropNullProperties(child);
  }
  return out;
}

function property(schemas: Schemas, schema: string, name: string): JsonSchema {
  const properties = schemas[schema]?.properties as Record<string, JsonSchema> | undefined;
  const found = properties?.[name];
  if (!found)
    throw new Error(`${SPEC_PATH}: ${schema}.${name} is missing; the spec changed, revisit SPEC_EXCEPTIONS`);
  return found;
}

/** list-app-network-is-a-string */
function listAppNetworkIsAString(schemas: Schemas): void {
  const network = property(schemas, 'ListApp', 'network');
  if (network.type !== 'object')
    throw new Error('ListApp.network is no longer typed object; drop this exception');
  network.type = 'string';
}

/** error-status-codes */
function errorStatusCodes(schemas: Schemas): void {
  const statusCode = schemas['main.statusCode'];
  if (!statusCode || !Array.isArray(statusCode.enum))
    throw new Error('main.statusCode has no enum; revisit SPEC_EXCEPTIONS');
  statusCode.enum = [...new Set([...(statusCode.enum as string[]), 'name_taken', ...HANGAR_ERROR_CODES])];
}

/** autostop-suspend */
function autostopSuspend(schemas: Schemas): void {
  const services = schemas['api.MachineService']?.properties as Record<string, JsonSchema>;
  if (property(schemas, 'api.MachineService', 'autostop').type !== 'boolean') {
    throw new Error('api.MachineService.autostop is no longer boolean; revisit SPEC_EXCEPTIONS');
  }
  services.autostop = { anyOf: [{ type: 'boolean' }, { type: 'string', enum: ['suspend'] }] };
}

// ---- loading --------------------------------------------------------------------------------------

const SPEC_ID = 'fly-machines-openapi';

function loadSchemas(): Schemas {
  const spec = JSON.parse(readFileSync(SPEC_PATH, 'utf8')) as { components?: { schemas?: Schemas } };
  const schemas = spec.components?.schemas;
  if (!schemas) throw new Error(`${SPEC_PATH} has no components.schemas`);
  const copy = structuredClone(schemas);
  listAppNetworkIsAString(copy);
  errorStatusCodes(copy);
  autostopSuspend(copy);
  return copy;
}

let compiled: { ajv: Ajv; names: Set<string> } | undefined;
const validators = new Map<string, ValidateFunction>();

function validatorFor(schemaName: string): ValidateFunction {
  compiled ??= (() => {
    const schemas = loadSchemas();
    // strict: false lets OpenAPI's own keywords (example, x-enum-varnames) through; they validate nothing.
    const ajv = new Ajv({ strict: false, allErrors: true });
    // ajv-formats is CommonJS; under ESM its function may sit on `.default`.
    const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
      addFormatsModule) as (ajv: Ajv) => Ajv;
    addFormats(ajv);
    // Refs in the spec read `#/components/schemas/X`: keep that layout under one schema id.
    ajv.addSchema({ $id: SPEC_ID, components: { schemas } });
    return { ajv, names: new Set(Object.keys(schemas)) };
  })();
  let validate = validators.get(schemaName);
  if (!validate) {
    if (!compiled.names.has(schemaName)) {
      throw new Error(`no component schema "${schemaName}" in ${SPEC_PATH}`);
    }
    const pointer = `${SPEC_ID}#/components/schemas/${schemaName.replaceAll('~', '~0').replaceAll('/', '~1')}`;
    const found = compiled.ajv.getSchema(pointer);
    if (!found) throw new Error(`could not compile ${pointer}`);
    validate = found;
    validators.set(schemaName, validate);
  }
  return validate;
}

function describe(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? [])
    .map(
      (e) =>
        `  ${e.instancePath || '(root)'} ${e.message ?? 'is invalid'} ${JSON.stringify(e.params)} [${e.schemaPath}]`,
    )
    .join('\n');
}

/** Throws an AssertionError that lists every Ajv error when `body` does not match the component schema. */
export function assertMatchesSchema(schemaName: string, body: unknown, context = ''): void {
  const validate = validatorFor(schemaName);
  const adjusted = dropNullProperties(body);
  if (validate(adjusted)) return;
  const where = context ? ` (${context})` : '';
  throw new AssertionError({
    message:
      `response does not match ${schemaName}${where}:\n${describe(validate.errors)}\n` +
      `body: ${JSON.stringify(body).slice(0, 2000)}`,
    actual: body,
    expected: schemaName,
    operator: 'assertMatchesSchema',
  });
}

/** For `type: array` responses (`items: $ref X`): asserts an array and checks every item. */
export function assertArrayOfSchema(schemaName: string, body: unknown, context = ''): void {
  if (!Array.isArray(body)) {
    throw new AssertionError({
      message: `expected an array of ${schemaName}${context ? ` (${context})` : ''}, got ${JSON.stringify(body)?.slice(0, 500)}`,
      actual: body,
      expected: `${schemaName}[]`,
      operator: 'assertArrayOfSchema',
    });
  }
  body.forEach((item, index) => {
    assertMatchesSchema(schemaName, item, `${context ? `${context} ` : ''}item ${index}`);
  });
}
