import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { describePushed, pushedLine, registryAddress, writePushCredentials } from '../../registry.js';
import { deploymentTag } from '../deploy/image.js';
import { runTool } from '../deploy/tool.js';
import { skopeoSource } from './source.js';

interface Opts {
  tag?: string;
  name?: string;
  registry?: string;
}

const SKOPEO_HINT = 'install skopeo (apt-get install skopeo): Hangar copies images with it';
const NAME = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export default defineVerb<Opts>({
  usage: 'push <image>',
  summary: 'Push a local image to the app’s space in Hangar’s registry',
  description:
    'Copy a local image (an OCI layout directory, oci:/oci-archive:/docker-archive: reference, or a ' +
    'buildah/podman image name) with skopeo to <registry>/<app>/<name>:<tag>, with the CLI’s token. ' +
    'Prints the pushed reference with its digest, ready for `hangar machine run` or `hangar deploy --image`.',
  examples: [
    'hangar image push ./build/oci -a acme --tag v1',
    'hangar image push oci-archive:web.tar -a acme',
    'hangar image push localhost/web:latest -a acme --name web --tag v2',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd
      .option('--tag <tag>', 'the tag to push (default: a new deployment-<time> tag)')
      .option('--name <name>', 'the repository in the app’s space (default: the app’s name)')
      .option(
        '--registry <host:port>',
        "Hangar's registry (env HANGAR_REGISTRY; default: the API host, port + 1)",
      );
  },
  async run({ app, arg, opts, io, out, config }) {
    const name = app();
    const source = skopeoSource(arg(0));
    const tag = opts.tag ?? deploymentTag();
    if (!TAG.test(tag))
      throw new CliError(`invalid tag "${tag}"`, 'use letters, digits, _ . and -, up to 128');
    const repoName = opts.name ?? name;
    if (!NAME.test(repoName)) {
      throw new CliError(
        `invalid repository name "${repoName}"`,
        'use lower-case letters, digits, . _ - and /',
      );
    }
    const settings = config();
    if (!settings.token)
      throw new CliError(
        'no API token to push the image with',
        'run hangar auth login or set HANGAR_API_TOKEN',
      );
    const registry = {
      address: registryAddress(opts.registry, io.env, settings.apiUrl),
      token: settings.token,
    };
    const repository = `${name}/${repoName}`;
    const reference = `${registry.address}/${repository}:${tag}`;
    const work = await mkdtemp(join(tmpdir(), 'hangar-push-'));
    try {
      const credentials = await writePushCredentials(work, registry);
      const digestFile = join(work, 'digest');
      out.note(`Pushing ${source} to ${reference}`);
      await runTool(
        'skopeo',
        [
          'copy',
          // Hangar's registry speaks plain HTTP; this applies to the destination only.
          '--dest-tls-verify=false',
          '--dest-authfile',
          credentials.authFile,
          '--digestfile',
          digestFile,
          source,
          `docker://${reference}`,
        ],
        { env: credentials.env, onLine: (line) => out.note(`  ${line}`), installHint: SKOPEO_HINT },
      );
      const digest = (await readFile(digestFile, 'utf8')).trim();
      const summary = await describePushed(registry, repository, digest);
      out.note(pushedLine(summary, digest));
      if (out.json) out.printJson({ reference, repository, tag, digest, ...summary });
      else out.line(`${reference}@${digest}`);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  },
});
