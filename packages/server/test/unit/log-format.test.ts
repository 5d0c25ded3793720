import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chooseLogFormat, eventLine, formatLogRecord, logDestination } from '../../src/shared/log-format.js';

/**
 * hangard's log: text for a terminal, JSON lines otherwise, `logFormat` forcing either; the formatter
 * prints only the fields it names (the built hangard's own output is tested in integration/log-output).
 */

test('auto is text on a terminal and JSON elsewhere; text and json force either', () => {
  assert.equal(chooseLogFormat('auto', true), 'text');
  assert.equal(chooseLogFormat('auto', false), 'json');
  assert.equal(chooseLogFormat('text', false), 'text');
  assert.equal(chooseLogFormat('json', true), 'json');
});

test('a request record reads as one line with time, method, path, status, duration and request id', () => {
  const time = Date.parse('2026-01-02T03:04:05.678Z');
  const line = formatLogRecord({
    level: 30,
    time,
    reqId: '01JREQ',
    method: 'GET',
    url: '/v1/apps/acme/machines',
    statusCode: 200,
    responseTime: 3.14,
    msg: 'request',
    headers: { authorization: 'Bearer hidden-token' },
  });
  assert.equal(line, '03:04:05.678 GET /v1/apps/acme/machines 200 3.1ms 01JREQ');
  assert.equal(
    formatLogRecord({ level: 50, time, msg: 'boom', reqId: '01JX', err: { message: 'disk full' } }),
    '03:04:05.678 ERROR boom 01JX error="disk full"',
  );
});

test('the destination passes JSON through or rewrites each line, split writes included', async () => {
  const record = JSON.stringify({
    level: 30,
    time: 0,
    method: 'POST',
    url: '/v1/apps',
    statusCode: 201,
    responseTime: 1,
    reqId: 'R',
  });
  for (const [format, expected] of [
    ['json', `${record}\n`],
    ['text', '00:00:00.000 POST /v1/apps 201 1.0ms R\n'],
  ] as const) {
    let written = '';
    const stream = logDestination(format, { write: (text: string) => (written += text) });
    const half = Math.floor(record.length / 2);
    await new Promise<void>((resolve) => stream.write(record.slice(0, half), () => resolve()));
    await new Promise<void>((resolve) => stream.write(`${record.slice(half)}\n`, () => resolve()));
    assert.equal(written, expected);
  }
});

test('an event is one compact line, or one JSON object with its fields', () => {
  const now = Date.parse('2026-01-02T03:04:05.678Z');
  const fields = { machine: 'm1', name: 'web', from: undefined, to: 'started' };
  assert.equal(
    eventLine('text', 'machine state', fields, now),
    '03:04:05.678 machine state machine=m1 name=web to=started\n',
  );
  assert.deepEqual(
    JSON.parse(eventLine('json', 'wake', { app: 'acme', machine: 'm1', from: 'stopped', ms: 412 }, now)),
    {
      level: 30,
      time: now,
      msg: 'wake',
      app: 'acme',
      machine: 'm1',
      from: 'stopped',
      ms: 412,
    },
  );
});
