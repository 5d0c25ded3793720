import type { z } from 'zod';
import { invalidArgument } from '../shared/errors.js';

/**
 * Parses request input with a schema; on failure the 400 names the first offending field by its JSON
 * path (`config.guest.memory_mb: ...`), so the caller knows exactly what to fix.
 */
export function parse<S extends z.ZodType>(schema: S, value: unknown, where: 'body' | 'query'): z.infer<S> {
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.map(String).join('.');
  const field = path === '' ? `request ${where}` : path;
  const extra =
    result.error.issues.length > 1 ? ` (and ${result.error.issues.length - 1} more problem(s))` : '';
  throw invalidArgument(`${field}: ${issue.message}${extra}`);
}
