import net from 'node:net';
import type { Duplex } from 'node:stream';
import { neverConnected } from './upstream.js';

/**
 * A raw TCP connection to a machine (handlers `[]`, `["tls"]`, `["proxy_proto"]`): the proxy dials the
 * machine, writes the PROXY header first when the port asks for one, then passes bytes both ways with
 * backpressure until either side closes.
 */

export interface RawTarget {
  host: string;
  port: number;
  /** The PROXY protocol header, written before any byte of the client. */
  header: Buffer | undefined;
}

export interface RawHooks {
  /** Bytes moved either way (the machine's activity, for autostop). */
  onActivity: () => void;
  /** The connection is over (both sides closed). */
  onEnd: () => void;
}

/** 'retry' when the machine's connection was never made (no byte reached it): another may be tried. */
export function pipeRaw(client: Duplex, target: RawTarget, hooks: RawHooks): Promise<'done' | 'retry'> {
  // Bytes the client sends meanwhile wait in its socket until the machine's connection is up.
  client.pause();
  return new Promise((resolve) => {
    const upstream = net.connect({ host: target.host, port: target.port });
    let connected = false;
    upstream.once('error', (error: NodeJS.ErrnoException) => {
      if (connected) return;
      if (neverConnected(error, false)) resolve('retry');
      else {
        client.destroy();
        hooks.onEnd();
        resolve('done');
      }
    });
    upstream.once('connect', () => {
      connected = true;
      upstream.setNoDelay(true);
      if (target.header) upstream.write(target.header);
      client.on('data', hooks.onActivity);
      upstream.on('data', hooks.onActivity);
      client.pipe(upstream);
      upstream.pipe(client);
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        client.destroy();
        upstream.destroy();
        hooks.onEnd();
      };
      client.once('close', end);
      upstream.once('close', end);
      client.on('error', () => undefined);
      upstream.on('error', () => undefined);
      // The client may have gone while the machine was dialled: its close already happened.
      if (client.destroyed) end();
      else client.resume();
      resolve('done');
    });
  });
}
