// DNS queries from inside a machine's network namespace (`ip netns exec hangar-<id> node dns-probe.mjs
// '<json>'`): argv[2] is a JSON array of {server, name, type, transport: "udp"|"tcp"}; all run at once,
// each bounded by TIMEOUT_MS, and stdout gets one JSON array of {rcode, answers} or {error} in order.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';

const TIMEOUT_MS = 1500;
const queries = JSON.parse(process.argv[2] ?? '[]');

function exchange({ server, transport }, message) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy?.();
      if (transport === 'udp') socket.close();
      reject(new Error('timeout'));
    }, TIMEOUT_MS);
    const done = (reply) => {
      clearTimeout(timer);
      resolve(reply);
    };
    let socket;
    if (transport === 'udp') {
      socket = dgram.createSocket('udp6');
      socket.on('message', (reply) => {
        socket.close();
        done(reply);
      });
      socket.send(message, 53, server);
      return;
    }
    let buffered = Buffer.alloc(0);
    socket = net.connect({ host: server, port: 53 }, () => {
      const length = Buffer.alloc(2);
      length.writeUInt16BE(message.length);
      socket.write(Buffer.concat([length, message]));
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        socket.destroy();
        done(buffered.subarray(2, 2 + buffered.readUInt16BE(0)));
      }
    });
  });
}

async function ask(query, id) {
  const message = dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name: query.name, type: query.type, class: 'IN' }],
  });
  try {
    const reply = dnsPacket.decode(await exchange(query, message));
    const answers = (reply.answers ?? []).map((a) =>
      Array.isArray(a.data) ? a.data.map((part) => part.toString()).join('') : String(a.data),
    );
    return { rcode: reply.rcode, answers };
  } catch (error) {
    return { error: error.code ?? error.message };
  }
}

const results = await Promise.all(queries.map((query, i) => ask(query, i + 1)));
process.stdout.write(`${JSON.stringify(results)}\n`);
