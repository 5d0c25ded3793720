import { Transform, type TransformCallback } from 'node:stream';

/** A server's close frame, unmasked: FIN + opcode 8, two bytes of payload, status 1001 ("going away"). */
export const GOING_AWAY_FRAME = Buffer.from([0x88, 0x02, 0x03, 0xe9]);

/** An answer head longer than this is not the 101 of a WebSocket: the stream is then passed as it is. */
const MAX_HEAD_BYTES = 16 * 1024;

/**
 * Sits in the machine → client direction of an upgraded connection and follows it: first the HTTP
 * answer (is it `101`?), then the WebSocket frames' boundaries. When autostop is about to stop the
 * machine, `goAway()` ends the client's side properly: the frame in passage is finished, then a close
 * frame with status 1001 is sent and nothing more (RFC 6455 §5.5.1: no data after a close). A stream
 * that is not a WebSocket is simply ended.
 */
export class WebSocketGoAway extends Transform {
  #head: Buffer | undefined = Buffer.alloc(0);
  #websocket = false;
  /** Bytes of the current frame's header read so far (a header may arrive in pieces). */
  #header = Buffer.alloc(0);
  /** Payload bytes of the current frame still to pass. */
  #payloadLeft = 0;
  #leaving = false;
  #done = false;

  /** Ends the client's side at the next frame boundary, with a 1001 close frame for a WebSocket. */
  goAway(): void {
    if (this.#done) return;
    this.#leaving = true;
    if (this.#head !== undefined || !this.#websocket) this.#finish(false);
    else if (this.#atBoundary()) this.#finish(true);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    // After the close frame, nothing more reaches the client.
    if (!this.#done) {
      let rest = chunk;
      if (this.#head !== undefined) rest = this.#readHead(rest);
      if (this.#head === undefined && this.#websocket) this.#passFrames(rest);
      else if (rest.length > 0) this.push(rest);
    }
    done();
  }

  #readHead(chunk: Buffer): Buffer {
    const head = Buffer.concat([this.#head!, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0 && head.length <= MAX_HEAD_BYTES) {
      this.#head = head;
      return Buffer.alloc(0);
    }
    this.#head = undefined;
    if (end < 0) return head; // not an HTTP answer we understand: passed as it is, never framed
    this.#websocket = /^HTTP\/1\.[01] 101 /.test(head.subarray(0, 16).toString('latin1'));
    this.push(head.subarray(0, end + 4));
    return head.subarray(end + 4);
  }

  #passFrames(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length && !this.#done) {
      if (this.#payloadLeft > 0) {
        const take = Math.min(this.#payloadLeft, chunk.length - offset);
        this.push(chunk.subarray(offset, offset + take));
        offset += take;
        this.#payloadLeft -= take;
      } else {
        const header = Buffer.concat([this.#header, chunk.subarray(offset, offset + 14)]);
        const size = headerSize(header);
        if (size === undefined || header.length < size) {
          // Incomplete: keep what came and wait for more.
          this.#header = header;
          offset = chunk.length;
          continue;
        }
        const used = size - this.#header.length;
        this.push(header.subarray(0, size));
        this.#payloadLeft = payloadLength(header);
        this.#header = Buffer.alloc(0);
        offset += used;
      }
      if (this.#leaving && this.#atBoundary()) this.#finish(true);
    }
  }

  #atBoundary(): boolean {
    return this.#payloadLeft === 0 && this.#header.length === 0;
  }

  #finish(withClose: boolean): void {
    this.#done = true;
    if (withClose) this.push(GOING_AWAY_FRAME);
    this.push(null);
  }
}

/** The size of a frame header (2 to 14 bytes), or undefined until its first two bytes are there. */
function headerSize(header: Buffer): number | undefined {
  if (header.length < 2) return undefined;
  const length7 = header[1]! & 0x7f;
  const extended = length7 === 126 ? 2 : length7 === 127 ? 8 : 0;
  const mask = header[1]! & 0x80 ? 4 : 0;
  return 2 + extended + mask;
}

function payloadLength(header: Buffer): number {
  const length7 = header[1]! & 0x7f;
  if (length7 === 126) return header.readUInt16BE(2);
  if (length7 === 127) return Number(header.readBigUInt64BE(2));
  return length7;
}
