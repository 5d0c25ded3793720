import type { Machine } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { listTags, registryAddress } from '../../registry.js';

interface Opts {
  registry?: string;
}

interface MachineImage {
  id: string;
  name: string | undefined;
  state: string | undefined;
  image: string | undefined;
  digest: string | undefined;
  /** The repository when the image is in Hangar's registry, else undefined. */
  repository: string | undefined;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** `host:port/<repository>[:tag][@digest]` → host and repository; undefined for a reference without a host. */
function splitReference(image: string): { host: string; repository: string } | undefined {
  const slash = image.indexOf('/');
  if (slash < 0) return undefined;
  const host = image.slice(0, slash);
  if (!host.includes('.') && !host.includes(':') && host !== 'localhost') return undefined;
  const rest = image.slice(slash + 1).replace(/@.*$/, '');
  const colon = rest.lastIndexOf(':');
  return { host, repository: colon > rest.lastIndexOf('/') ? rest.slice(0, colon) : rest };
}

/** Whether `host` is Hangar's registry: its address, or the same port on loopback (how machines name it). */
function isHangarRegistry(host: string, address: string): boolean {
  if (host === address) return true;
  const port = (h: string) => h.slice(h.lastIndexOf(':') + 1);
  const name = (h: string) => h.slice(0, h.lastIndexOf(':'));
  return port(host) === port(address) && LOOPBACK.has(name(host)) && LOOPBACK.has(name(address));
}

export default defineVerb<Opts>({
  usage: 'show',
  summary: 'Show the image each machine of the app runs',
  description:
    'For every machine of the app: its image reference and digest; for images in Hangar’s registry, the ' +
    'tags of their repository (read through the registry API with the CLI’s token).',
  examples: ['hangar image show -a acme', 'hangar image show -a acme --json'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option(
      '--registry <host:port>',
      "Hangar's registry (env HANGAR_REGISTRY; default: the API host, port + 1)",
    );
  },
  async run({ app, opts, io, out, client, config }) {
    const name = app();
    const settings = config();
    const address = registryAddress(opts.registry, io.env, settings.apiUrl);
    const machines: Machine[] = await client().machines.list(name);
    const images: MachineImage[] = machines.map((m) => {
      const image = m.config?.image;
      const parts = image ? splitReference(image) : undefined;
      return {
        id: m.id,
        name: m.name,
        state: m.state,
        image,
        digest: m.image_ref?.digest,
        repository: parts && isHangarRegistry(parts.host, address) ? parts.repository : undefined,
      };
    });
    const repositories: Array<{ repository: string; tags: string[] | null }> = [];
    for (const repository of new Set(images.flatMap((i) => (i.repository ? [i.repository] : [])))) {
      const tags = settings.token
        ? await listTags({ address, token: settings.token }, repository, io.fetch)
        : undefined;
      repositories.push({ repository, tags: tags ?? null });
    }
    if (out.json) {
      out.printJson({ app: name, machines: images, repositories });
      return;
    }
    out.list<MachineImage>(
      images,
      [
        { header: 'Machine', value: (i) => i.id },
        { header: 'Name', value: (i) => i.name },
        { header: 'State', value: (i) => i.state },
        { header: 'Image', value: (i) => i.image },
        { header: 'Digest', value: (i) => i.digest },
      ],
      `No machines in app ${name}`,
    );
    for (const { repository, tags } of repositories) {
      out.line('');
      out.line(
        `Tags of ${address}/${repository}: ${tags ? tags.join(', ') || '(none)' : '(registry unreachable or refused)'}`,
      );
    }
  },
});
