// A stand-in for a machine's workload in the isolation tests, run inside the machine's network namespace
// (`ip netns exec <ns> node probe-agent.mjs <name>`). It serves TCP and UDP on [::]:8080, answering with
// its name so a test knows which machine it reached, and runs probes asked for on stdin, one JSON object a
// line: {id, kind: "tcp"|"udp"|"icmp", to, port?, from?, timeoutMs?}. `from` picks the source address
// (the spoofing tests add foreign addresses to eth0). Answers go to stdout, one JSON object a line:
// {id, ok, answer?, detail?, sent?}; a UDP probe's `sent` is what its sendto reported (bytes, or the error
// code), so a test can tell a datagram that was sent and dropped from one that never left. TCP probes take
// IPv4 targets too (the attack tests give the namespace an IPv4 address of its own). The first line is {ready: true} once both servers listen. The kind "heard"
// answers with the source addresses of every UDP datagram the server received, so a test can tell that
// a packet never arrived even when no reply could have come back (a spoofed source has no return path).
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import readline from 'node:readline';

const name = process.argv[2] ?? 'agent';
const PORT = 8080;

function answer(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function probeTcp({ to, port, from, timeoutMs }) {
  return new Promise((resolve) => {
    let data = '';
    const family = net.isIPv4(to) ? 4 : 6;
    const socket = net.connect({ host: to, port, family, ...(from ? { localAddress: from } : {}) });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ok: false, detail: 'timeout' });
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      data += chunk;
    });
    socket.on('end', () => {
      clearTimeout(timer);
      resolve(data ? { ok: true, answer: data.trim() } : { ok: false, detail: 'closed without answer' });
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      resolve({ ok: false, detail: error.code ?? error.message });
    });
  });
}

function probeUdp({ to, port, from, timeoutMs }) {
  return new Promise((resolve) => {
    const socket = dgram.createSocket({ type: 'udp6' });
    let sent;
    const finish = (result) => {
      clearTimeout(timer);
      socket.close();
      resolve({ ...result, ...(sent === undefined ? {} : { sent }) });
    };
    const timer = setTimeout(() => finish({ ok: false, detail: 'timeout' }), timeoutMs);
    socket.on('message', (message) => finish({ ok: true, answer: message.toString().trim() }));
    socket.on('error', (error) => finish({ ok: false, detail: error.code ?? error.message }));
    socket.bind({ address: from ?? '::', port: 0 }, () =>
      socket.send(`from ${name}`, port, to, (error, bytes) => {
        sent = error ? (error.code ?? error.message) : bytes;
      }),
    );
  });
}

function probeIcmp({ to, from, timeoutMs }) {
  return new Promise((resolve) => {
    const seconds = String(Math.max(1, Math.round(timeoutMs / 1000)));
    const ping = spawn(
      'busybox',
      ['ping', '-6', '-c', '1', '-W', seconds, ...(from ? ['-I', from] : []), to],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    ping.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    ping.on('error', (error) => resolve({ ok: false, detail: error.message }));
    ping.on('close', (code) =>
      resolve(code === 0 ? { ok: true } : { ok: false, detail: stderr.trim() || `exit ${code}` }),
    );
  });
}

const heard = new Set();
const PROBES = {
  tcp: probeTcp,
  udp: probeUdp,
  icmp: probeIcmp,
  heard: async () => ({ ok: true, answer: JSON.stringify([...heard]) }),
};

const tcpServer = net.createServer((socket) => {
  socket.on('error', () => {});
  socket.end(`${name}\n`);
});
const udpServer = dgram.createSocket({ type: 'udp6', ipv6Only: true });
udpServer.on('message', (_message, peer) => {
  heard.add(peer.address);
  udpServer.send(name, peer.port, peer.address);
});

await Promise.all([
  new Promise((resolve) => tcpServer.listen({ host: '::', port: PORT, ipv6Only: true }, resolve)),
  new Promise((resolve) => udpServer.bind(PORT, '::', resolve)),
]);
answer({ ready: true });

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const request = JSON.parse(line);
  const probe = PROBES[request.kind];
  const run = probe
    ? probe({ port: PORT, timeoutMs: 1000, ...request })
    : Promise.resolve({ ok: false, detail: 'unknown kind' });
  run.then((result) => answer({ id: request.id, ...result }));
});
// The test closes stdin when it is done with this machine.
process.stdin.on('end', () => process.exit(0));
