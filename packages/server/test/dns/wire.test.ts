import assert from 'node:assert/strict';
import { test } from 'node:test';
import dnsPacket from 'dns-packet';
import { encodeReply, questionBytes } from '../../src/dns/wire.js';

const query = (name: string, type: dnsPacket.RecordType, klass: dnsPacket.RecordClass = 'IN') =>
  dnsPacket.encode({ type: 'query', id: 0x1234, questions: [{ name, type, class: klass }] });

test('wire: answers point at the question name, which is echoed byte for byte', () => {
  const asked = query('WeB.Internal', 'AAAA');
  const question = questionBytes(asked)!;
  assert.deepEqual(question, asked.subarray(12));
  const reply = encodeReply({
    id: 0x1234,
    flags: 0x8580,
    question,
    questionName: 'WeB.Internal',
    answers: [
      { name: 'WeB.Internal', type: 'AAAA', ttl: 5, data: 'fdaa:0:1:a7b:0:1:0:2' },
      { name: 'WeB.Internal', type: 'AAAA', ttl: 5, data: 'fdaa:0:1:a7b:0:2:0:2' },
    ],
    authorities: [],
  });
  // header + question + 2 × (2-byte pointer + 10 + 16)
  assert.equal(reply.length, 12 + question.length + 2 * 28);
  assert.deepEqual(reply.subarray(12, 12 + question.length), question);
  const decoded = dnsPacket.decode(reply);
  assert.equal(decoded.id, 0x1234);
  assert.equal(decoded.flag_qr && decoded.flag_aa && decoded.flag_rd && decoded.flag_ra, true);
  assert.deepEqual(
    decoded.answers?.map((a) => [a.name, a.type, (a as { ttl: number }).ttl, (a as { data: string }).data]),
    [
      ['WeB.Internal', 'AAAA', 5, 'fdaa:0:1:a7b:0:1:0:2'],
      ['WeB.Internal', 'AAAA', 5, 'fdaa:0:1:a7b:0:2:0:2'],
    ],
  );
});

test('wire: TXT strings, an SOA authority and the OPT record decode as written', () => {
  const asked = query('_apps.internal', 'TXT', 'CH');
  const question = questionBytes(asked)!;
  const reply = encodeReply({
    id: 7,
    flags: 0x8403,
    question,
    questionName: '_apps.internal',
    answers: [{ name: '_apps.internal.', type: 'TXT', ttl: 5, data: ['a'.repeat(255), 'b'] }],
    authorities: [
      {
        name: 'internal',
        type: 'SOA',
        ttl: 5,
        data: {
          mname: 'internal',
          rname: 'hostmaster.internal',
          serial: 9,
          refresh: 60,
          retry: 60,
          expire: 3600,
          minimum: 5,
        },
      },
    ],
    ednsUdpSize: 1232,
  });
  const decoded = dnsPacket.decode(reply);
  assert.equal(decoded.questions?.[0]?.class, 'CH');
  const txt = decoded.answers?.[0] as { data: Buffer[] };
  assert.deepEqual(
    txt.data.map((b) => b.toString()),
    ['a'.repeat(255), 'b'],
  );
  const soa = decoded.authorities?.[0] as dnsPacket.SoaAnswer;
  assert.equal(soa.name, 'internal');
  assert.equal(soa.data.rname, 'hostmaster.internal');
  assert.equal(soa.data.serial, 9);
  const opt = decoded.additionals?.[0] as dnsPacket.OptAnswer;
  assert.equal(opt.type, 'OPT');
  assert.equal(opt.udpPayloadSize, 1232);
  assert.throws(
    () =>
      encodeReply({
        id: 1,
        flags: 0x8000,
        question,
        questionName: 'x',
        answers: [{ name: 'x', type: 'TXT', ttl: 5, data: ['c'.repeat(256)] }],
        authorities: [],
      }),
    /longer than 255/,
  );
});

test('wire: questionBytes refuses what is not one plain question', () => {
  assert.equal(questionBytes(Buffer.alloc(12)), undefined);
  const truncated = query('web.internal', 'AAAA').subarray(0, 20);
  assert.equal(questionBytes(truncated), undefined);
  const pointer = Buffer.concat([Buffer.alloc(12), Buffer.from([0xc0, 0x0c, 0, 28, 0, 1])]);
  assert.equal(questionBytes(pointer), undefined);
});
