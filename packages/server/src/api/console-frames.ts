/**
 * The frames of a console connection after its upgrade (docs/api.md, Console): a type byte, a 4-byte
 * big-endian payload length, the payload. Frames let one byte stream carry input, its end, output and the
 * exit code.
 */

export const FRAME = {
  /** Client to server: input; server to client: output. */
  data: 0,
  /** Client to server: the input has ended (the command sees end of file). */
  eof: 1,
  /** Server to client, last: the command's exit code, a 4-byte big-endian signed integer. */
  exit: 2,
  /** Client to server: the terminal's new size, rows then columns, 2 bytes big-endian each. */
  resize: 3,
} as const;

/** The largest payload accepted from a client (input is sent as it is typed or read). */
export const MAX_FRAME_BYTES = 1024 * 1024;

export function encodeFrame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

/** Splits a byte stream into frames; `push` returns the complete ones, keeping a partial one. */
export class FrameReader {
  #pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): { type: number; payload: Buffer }[] {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const frames: { type: number; payload: Buffer }[] = [];
    while (this.#pending.length >= 5) {
      const length = this.#pending.readUInt32BE(1);
      if (length > MAX_FRAME_BYTES) throw new RangeError(`a frame of ${length} bytes is over the limit`);
      if (this.#pending.length < 5 + length) break;
      frames.push({ type: this.#pending.readUInt8(0), payload: this.#pending.subarray(5, 5 + length) });
      this.#pending = this.#pending.subarray(5 + length);
    }
    return frames;
  }
}
