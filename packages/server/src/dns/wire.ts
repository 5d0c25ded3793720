import { HangarError } from '../shared/errors.js';
import { parseIpv6 } from '../sixpn/ipv6.js';
import type { DnsRecord } from './resolve.js';

/**
 * Encodes Hangar's own replies. Queries are decoded with dns-packet, but replies are written here for two
 * reasons: answer names point back at the question (RFC 1035 §4.1.4 compression), which dns-packet does
 * not do and which lets about 17 AAAA records fit the 512 bytes of a client without EDNS instead of 12;
 * and the question is echoed byte for byte from the query, so letter case, unknown types and classes come
 * back exactly as sent. It writes in one pass into a scratch buffer: this is the hot path of every answer.
 */

const TYPE = { AAAA: 28, TXT: 16, SOA: 6, OPT: 41 } as const;
const CLASS_IN = 1;
/** A pointer to offset 12, where the question name starts in every message. */
const QUESTION_NAME_POINTER = 0xc00c;
/** The largest DNS message (TCP's 2-byte length); anything bigger cannot be sent at all. */
const MAX_MESSAGE = 0xffff;

export interface ReplyParts {
  id: number;
  /** The header's second 16 bits, QR included. */
  flags: number;
  /** The question section exactly as the query carried it (name, type, class). */
  question: Buffer;
  /** The question name as text (to tell which answers can point at it). */
  questionName: string;
  answers: readonly DnsRecord[];
  authorities: readonly DnsRecord[];
  /** When set, an OPT record advertising this UDP payload size (the client used EDNS). */
  ednsUdpSize?: number;
}

export class MessageTooLongError extends Error {
  constructor() {
    super('the DNS reply is longer than 65535 bytes');
    this.name = 'MessageTooLongError';
  }
}

/**
 * Machines' 6PN addresses repeat in answer after answer: parsed once, then copied. Bounded, so a churn
 * of addresses cannot grow it without limit.
 */
const addressBytes = new Map<string, Buffer>();
const ADDRESS_CACHE_SIZE = 4096;

function ipv6Bytes(address: string): Buffer {
  let bytes = addressBytes.get(address);
  if (!bytes) {
    const groups = parseIpv6(address);
    if (!groups) throw new HangarError('internal', `"${address}" is not an IPv6 address`);
    bytes = Buffer.alloc(16);
    for (const [i, group] of groups.entries()) bytes.writeUInt16BE(group, i * 2);
    if (addressBytes.size >= ADDRESS_CACHE_SIZE) addressBytes.clear();
    addressBytes.set(address, bytes);
  }
  return bytes;
}

const trimDot = (name: string) => (name.endsWith('.') ? name.slice(0, -1) : name);
const sameName = (a: string, b: string) => a === b || trimDot(a).toLowerCase() === trimDot(b).toLowerCase();

/** Sequential writes into one scratch buffer; every write checks the 65535-byte bound first. */
class Writer {
  offset = 0;
  constructor(readonly buffer: Buffer) {}

  #room(bytes: number): void {
    if (this.offset + bytes > MAX_MESSAGE) throw new MessageTooLongError();
  }

  u8(value: number): void {
    this.#room(1);
    this.buffer[this.offset++] = value;
  }

  u16(value: number): void {
    this.#room(2);
    this.buffer.writeUInt16BE(value, this.offset);
    this.offset += 2;
  }

  u32(value: number): void {
    this.#room(4);
    this.buffer.writeUInt32BE(value >>> 0, this.offset);
    this.offset += 4;
  }

  bytes(data: Buffer): void {
    this.#room(data.length);
    data.copy(this.buffer, this.offset);
    this.offset += data.length;
  }

  /** One character string: a length byte, then at most 255 bytes. */
  string(text: string): void {
    const length = Buffer.byteLength(text);
    if (length > 255) throw new HangarError('internal', 'a TXT character string is longer than 255 bytes');
    this.#room(1 + length);
    this.buffer[this.offset++] = length;
    this.offset += this.buffer.write(text, this.offset);
  }

  name(name: string): void {
    for (const label of trimDot(name).split('.')) {
      if (label === '') continue;
      if (Buffer.byteLength(label) > 63)
        throw new HangarError('internal', `a DNS label in "${name}" is longer than 63 bytes`);
      this.string(label);
    }
    this.u8(0);
  }
}

function writeRecord(out: Writer, record: DnsRecord, questionName: string): void {
  if (sameName(record.name, questionName)) out.u16(QUESTION_NAME_POINTER);
  else out.name(record.name);
  out.u16(TYPE[record.type]);
  out.u16(CLASS_IN);
  out.u32(record.ttl);
  // RDLENGTH is known only once the data is written: reserve it, then fill it in.
  const lengthAt = out.offset;
  out.u16(0);
  switch (record.type) {
    case 'AAAA':
      out.bytes(ipv6Bytes(record.data));
      break;
    case 'TXT':
      for (const text of record.data) out.string(text);
      break;
    case 'SOA': {
      const { mname, rname, serial, refresh, retry, expire, minimum } = record.data;
      out.name(mname);
      out.name(rname);
      for (const value of [serial, refresh, retry, expire, minimum]) out.u32(value);
      break;
    }
  }
  out.buffer.writeUInt16BE(out.offset - lengthAt - 2, lengthAt);
}

/** The question section's bytes (one uncompressed name, type and class), or undefined when malformed. */
export function questionBytes(message: Buffer): Buffer | undefined {
  let offset = 12;
  while (offset < message.length) {
    const length = message[offset]!;
    if (length === 0) {
      const end = offset + 5;
      return end <= message.length ? message.subarray(12, end) : undefined;
    }
    if (length > 63) return undefined;
    offset += length + 1;
  }
  return undefined;
}

/** Reused by every reply (encoding is synchronous); the result is a copy of the bytes written. */
const scratch = Buffer.alloc(MAX_MESSAGE);

/** Throws MessageTooLongError when the reply cannot fit one DNS message. */
export function encodeReply(parts: ReplyParts): Buffer {
  const out = new Writer(scratch);
  out.u16(parts.id);
  out.u16(parts.flags);
  out.u16(1);
  out.u16(parts.answers.length);
  out.u16(parts.authorities.length);
  out.u16(parts.ednsUdpSize === undefined ? 0 : 1);
  out.bytes(parts.question);
  for (const record of parts.answers) writeRecord(out, record, parts.questionName);
  for (const record of parts.authorities) writeRecord(out, record, parts.questionName);
  if (parts.ednsUdpSize !== undefined) {
    // OPT: root name, type, class = UDP payload size, TTL = extended rcode, version and flags (all 0), no data.
    out.u8(0);
    out.u16(TYPE.OPT);
    out.u16(parts.ednsUdpSize);
    out.u32(0);
    out.u16(0);
  }
  return Buffer.from(scratch.subarray(0, out.offset));
}
