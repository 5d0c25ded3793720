import type { FastifyRequest } from 'fastify';
import { invalidArgument } from '../shared/errors.js';

/** Typed reads of query strings and the lease header, with 400s that name the parameter. */
type Query = Record<string, string | string[] | undefined>;

const queryOf = (request: FastifyRequest) => (request.query ?? {}) as Query;

export function queryList(request: FastifyRequest, name: string): string[] {
  const value = queryOf(request)[name];
  if (value === undefined) return [];
  return (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(',')).filter((v) => v !== '');
}

export function queryString(request: FastifyRequest, name: string): string | undefined {
  return queryList(request, name)[0];
}

export function queryBool(request: FastifyRequest, name: string): boolean {
  const value = queryString(request, name);
  if (value === undefined) return false;
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw invalidArgument(`${name}: expected true or false, got "${value}"`);
}

export function queryInt(
  request: FastifyRequest,
  name: string,
  range: { min: number; max: number },
): number | undefined {
  const value = queryString(request, name);
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number) || number < range.min || number > range.max) {
    throw invalidArgument(
      `${name}: expected a whole number from ${range.min} to ${range.max}, got "${value}"`,
    );
  }
  return number;
}

/** The `metadata.<key>=<value>` filters of a machine list. */
export function metadataFilters(request: FastifyRequest): Record<string, string> {
  const filters: Record<string, string> = {};
  for (const [key, value] of Object.entries(queryOf(request))) {
    if (key.startsWith('metadata.') && value !== undefined)
      filters[key.slice(9)] = Array.isArray(value) ? value[0]! : value;
  }
  return filters;
}

export function leaseNonce(request: FastifyRequest): string | undefined {
  const value = request.headers['fly-machine-lease-nonce'];
  return Array.isArray(value) ? value[0] : value;
}
