// How hangard's log reads: JSON lines (one object per line, pino's) for the journal and log shippers,
// or one short line per record for a person watching a terminal. The choice and the formatting are
// separate functions so that each can be tested without a terminal.

import { Writable } from 'node:stream';

export type LogFormatSetting = 'auto' | 'text' | 'json';
export type LogFormat = 'text' | 'json';

/** `auto` is `text` when stdout is a terminal, else `json`. */
export function chooseLogFormat(setting: LogFormatSetting, stdoutIsTTY: boolean): LogFormat {
  if (setting === 'auto') return stdoutIsTTY ? 'text' : 'json';
  return setting;
}

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

function clock(time: unknown): string {
  const date = new Date(typeof time === 'number' ? time : Date.now());
  return date.toISOString().slice(11, 23);
}

/**
 * One pino record as one line: `12:00:01.234 GET /v1/apps 200 3.1ms 01J…` for a request, else
 * `12:00:01.234 WARN message key=value`. Only the fields named here are printed, so nothing a record
 * might carry besides them (headers, bodies) can reach the terminal.
 */
export function formatLogRecord(record: Record<string, unknown>): string {
  const time = clock(record.time);
  const level = typeof record.level === 'number' ? record.level : 30;
  const mark = level === 30 ? '' : ` ${LEVELS[level] ?? level}`;
  if (typeof record.method === 'string' && typeof record.statusCode === 'number') {
    const ms = typeof record.responseTime === 'number' ? `${record.responseTime.toFixed(1)}ms` : '-';
    return `${time}${mark} ${record.method} ${String(record.url ?? '')} ${record.statusCode} ${ms} ${String(record.reqId ?? '')}`.trimEnd();
  }
  const err = record.err as { message?: unknown } | undefined;
  const extra = [
    typeof record.reqId === 'string' ? record.reqId : undefined,
    typeof err?.message === 'string' ? `error=${JSON.stringify(err.message)}` : undefined,
  ].filter(Boolean);
  return `${time}${mark} ${String(record.msg ?? '')}${extra.length ? ` ${extra.join(' ')}` : ''}`;
}

/** A pino destination: JSON lines pass through unchanged in `json`, each becomes one text line in `text`. */
export function logDestination(format: LogFormat, out: { write(text: string): unknown }): Writable {
  let pending = '';
  return new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      if (format === 'json') {
        out.write(chunk.toString());
        done();
        return;
      }
      pending += chunk.toString();
      let newline = pending.indexOf('\n');
      while (newline >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        try {
          out.write(`${formatLogRecord(JSON.parse(line) as Record<string, unknown>)}\n`);
        } catch {
          out.write(`${line}\n`);
        }
        newline = pending.indexOf('\n');
      }
      done();
    },
  });
}

export type EventFields = Record<string, string | number | undefined>;

/**
 * One notable event (a machine's state change, a wake, an autostop) in the log's format: a JSON object
 * with `msg` and the fields, or `12:00:01.234 machine state app=acme machine=… from=stopped to=started`.
 */
export function eventLine(format: LogFormat, msg: string, fields: EventFields, now = Date.now()): string {
  const present = Object.entries(fields).filter(([, v]) => v !== undefined);
  if (format === 'json')
    return `${JSON.stringify({ level: 30, time: now, msg, ...Object.fromEntries(present) })}\n`;
  return `${clock(now)} ${msg}${present.map(([k, v]) => ` ${k}=${v}`).join('')}\n`;
}
