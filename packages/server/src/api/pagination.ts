import type { FastifyReply, FastifyRequest } from 'fastify';
import { invalidArgument } from '../shared/errors.js';
import { LIMITS } from '../shared/limits.js';
import { queryInt, queryString } from './query.js';

/**
 * Pages of the lists that grow. Every list has one stable order: creation time then id (oldest first),
 * or the ULID id newest first (events, versions). A cursor is the opaque position of a page's last
 * item; the next page holds what comes after it in that order. An item created while a client pages is
 * newer than every cursor it was handed, so it appears on a later page (oldest-first lists) or not at
 * all (newest-first ones): nothing is skipped or repeated either way.
 *
 * `limit` is 1 to LIMITS.pageMax (default LIMITS.pageMax, so a client that never pages sees as much as
 * before). Array-shaped answers stay arrays and give the next page's cursor in the `hangar-next-cursor`
 * header (and a `Link: <…>; rel="next"`); object-shaped ones also carry it as `next_cursor`.
 */

export interface PageQuery {
  limit: number;
  /** The sort key of the last item the client saw. */
  after: string | undefined;
}

export interface Page<T> {
  items: T[];
  /** The cursor of the next page; undefined on the last page. */
  next: string | undefined;
}

export const NEXT_CURSOR_HEADER = 'hangar-next-cursor';
const CURSOR_VERSION = 'c1';

export function pageQuery(request: FastifyRequest, defaultLimit: number = LIMITS.pageMax): PageQuery {
  const limit = queryInt(request, 'limit', { min: 1, max: LIMITS.pageMax }) ?? defaultLimit;
  const cursor = queryString(request, 'cursor');
  return { limit, after: cursor === undefined ? undefined : decodeCursor(cursor) };
}

/** One page of `items`, ordered by `keyOf` (ascending, or descending with `newestFirst`). */
export function paginate<T>(
  items: readonly T[],
  keyOf: (item: T) => string,
  query: PageQuery,
  options: { newestFirst?: boolean } = {},
): Page<T> {
  const sign = options.newestFirst ? -1 : 1;
  const keyed = items.map((item) => ({ item, key: keyOf(item) }));
  keyed.sort((a, b) => sign * compare(a.key, b.key));
  const after = query.after;
  const rest = after === undefined ? keyed : keyed.filter(({ key }) => sign * compare(key, after) > 0);
  const page = rest.slice(0, query.limit);
  const last = page[page.length - 1];
  return {
    items: page.map(({ item }) => item),
    next: rest.length > page.length && last ? encodeCursor(last.key) : undefined,
  };
}

/** Creation time, then id: the order of lists whose records carry both. */
export const byCreation = (record: { createdAt: string; id: string }) => `${record.createdAt} ${record.id}`;

/** For an array-shaped answer: where the next page is. */
export function linkNextPage(request: FastifyRequest, reply: FastifyReply, next: string | undefined): void {
  if (next === undefined) return;
  reply.header(NEXT_CURSOR_HEADER, next);
  const url = new URL(request.url, 'http://api.invalid');
  url.searchParams.set('cursor', next);
  reply.header('link', `<${url.pathname}${url.search}>; rel="next"`);
}

function encodeCursor(key: string): string {
  return Buffer.from(`${CURSOR_VERSION}:${key}`, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): string {
  const text = /^[A-Za-z0-9_-]{1,1400}$/.test(cursor)
    ? Buffer.from(cursor, 'base64url').toString('utf8')
    : '';
  if (!text.startsWith(`${CURSOR_VERSION}:`) || text.length <= CURSOR_VERSION.length + 1) {
    throw invalidArgument(
      `cursor: "${cursor.slice(0, 64)}" is not a cursor this API handed out; pass the ${NEXT_CURSOR_HEADER} ` +
        'header (or next_cursor field) of the previous page unchanged, or leave cursor out to start from the first page',
    );
  }
  return text.slice(CURSOR_VERSION.length + 1);
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
