// A stand-in for a host on the internet, run inside a network namespace the egress test makes
// (`ip netns exec <ns> node egress-responder.mjs <port> [<port>…]`). On each port it listens on `::`
// (dual-stack, so IPv4 too) and answers every connection with `seen <peer> at <local>:<port>`, IPv4
// addresses without their `::ffff:` prefix, then closes: the test reads from it which source address
// (the host's NAT address) reached it. The first stdout line is `ready` once every port listens.
import net from 'node:net';

const plain = (address) => (address ?? '').replace(/^::ffff:/, '');
const ports = process.argv.slice(2).map(Number);

await Promise.all(
  ports.map(
    (port) =>
      new Promise((resolve, reject) => {
        const server = net.createServer((socket) => {
          socket.on('error', () => {});
          socket.end(`seen ${plain(socket.remoteAddress)} at ${plain(socket.localAddress)}:${port}\n`);
        });
        server.once('error', reject);
        server.listen({ host: '::', port, ipv6Only: false }, resolve);
      }),
  ),
);
process.stdout.write('ready\n');
// The test ends it by closing stdin (or killing it).
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
