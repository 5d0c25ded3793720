import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GOING_AWAY_FRAME, WebSocketGoAway } from '../../src/proxy/websocket-close.js';

const HEAD = Buffer.from(
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
);

/** An unmasked server frame with `payload` (text), its length in the 7-bit, 16-bit or 64-bit form. */
function frame(payload: Buffer): Buffer {
  const n = payload.length;
  if (n < 126) return Buffer.concat([Buffer.from([0x81, n]), payload]);
  if (n < 65_536) {
    const header = Buffer.from([0x81, 126, 0, 0]);
    header.writeUInt16BE(n, 2);
    return Buffer.concat([header, payload]);
  }
  const header = Buffer.alloc(10);
  header[0] = 0x81;
  header[1] = 127;
  header.writeBigUInt64BE(BigInt(n), 2);
  return Buffer.concat([header, payload]);
}

/** Feeds `bytes` in pieces of `step`, calls goAway() once `goAwayAt` bytes are in, returns what came out. */
async function run(bytes: Buffer, step: number, goAwayAt: number): Promise<Buffer> {
  const follower = new WebSocketGoAway();
  const out: Buffer[] = [];
  follower.on('data', (chunk: Buffer) => out.push(chunk));
  const ended = new Promise((resolve) => follower.once('end', resolve));
  let asked = false;
  for (let offset = 0; offset < bytes.length; offset += step) {
    if (!asked && offset >= goAwayAt) {
      follower.goAway();
      asked = true;
    }
    follower.write(bytes.subarray(offset, offset + step));
  }
  if (!asked) follower.goAway();
  follower.end();
  await ended;
  return Buffer.concat(out);
}

test('websocket go-away: the close frame (1001) lands between frames, never inside one', async () => {
  const frames = [frame(Buffer.from('hi')), frame(Buffer.alloc(300, 97)), frame(Buffer.alloc(70_000, 98))];
  const stream = Buffer.concat([HEAD, ...frames]);
  const boundaries = [HEAD.length];
  for (const f of frames) boundaries.push(boundaries.at(-1)! + f.length);
  for (const step of [1, 3, 7, 64, 1000, stream.length]) {
    for (const goAwayAt of [
      0,
      HEAD.length - 1,
      HEAD.length,
      HEAD.length + 1,
      HEAD.length + 5,
      400,
      stream.length,
    ]) {
      const out = await run(stream, step, goAwayAt);
      // What reached the client: whole frames up to a boundary, then exactly one close frame.
      const kept = out.subarray(0, out.length - GOING_AWAY_FRAME.length);
      const tail = out.subarray(out.length - GOING_AWAY_FRAME.length);
      const where = `step ${step}, goAway at ${goAwayAt}`;
      if (out.length <= HEAD.length) {
        // Before the answer head was complete it is not known to be a WebSocket: just ended.
        assert.ok(stream.subarray(0, out.length).equals(out), where);
        continue;
      }
      assert.ok(tail.equals(GOING_AWAY_FRAME), `${where}: ends with the close frame`);
      // The first boundary at or after what had come in when goAway() was called.
      const inAtCall = Math.min(Math.ceil(goAwayAt / step) * step, stream.length);
      const expected = boundaries.find((b) => b >= inAtCall);
      assert.equal(kept.length, expected, `${where}: cut at the first frame boundary after the call`);
      assert.ok(
        stream.subarray(0, kept.length).equals(kept),
        `${where}: the frames before it pass unchanged`,
      );
    }
  }
});

test('websocket go-away: an answer that is not 101 passes unchanged and is just ended', async () => {
  const answer = Buffer.from('HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno');
  assert.ok((await run(answer, 5, answer.length)).equals(answer));
  // Not HTTP at all (a raw service behind an upgrade): passed as it is once past the head limit.
  const raw = Buffer.alloc(20_000, 120);
  assert.ok((await run(raw, 4096, raw.length)).equals(raw));
});
