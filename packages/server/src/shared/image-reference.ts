import { invalidArgument } from './errors.js';

/**
 * Image references, parsed by Docker's rules so that a name means here what it means to `docker pull`:
 *   alpine                      → docker.io/library/alpine:latest
 *   acme/app:1                  → docker.io/acme/app:1
 *   127.0.0.1:5000/app          → 127.0.0.1:5000/app:latest
 *   registry.fly.io/app@sha256:…  → pinned to that digest (no tag)
 *   app:1@sha256:…              → the digest wins; the tag is kept only as a label for people
 * This is the one implementation; everything that needs the parts of a reference uses it.
 */
export interface ImageReference {
  /** Host, with a port when one was given: `docker.io`, `127.0.0.1:5000`, `[::1]:5000`. */
  registry: string;
  /** Path inside the registry, `library/alpine` for Docker Hub's official images. */
  repository: string;
  /** `latest` when neither a tag nor a digest is given; empty when only a digest is. */
  tag: string;
  /** `sha256:<64 hex>`, or empty when the reference names a tag. */
  digest: string;
}

export const DOCKER_HUB = 'docker.io';
const DEFAULT_TAG = 'latest';
/** Docker's limit on registry + repository. */
const MAX_NAME_LENGTH = 255;

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_LABEL = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = new RegExp(
  `^(?:${DOMAIN_LABEL}(?:\\.${DOMAIN_LABEL})*|\\[[0-9a-fA-F:.]+\\])(?::[0-9]{1,5})?$`,
);
const TAG = /^[\w][\w.-]{0,127}$/;
const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;

/** Throws an `invalid_argument` HangarError whose message says what is wrong and how a valid one looks. */
export function parseReference(reference: string): ImageReference {
  const fail = (why: string) =>
    invalidArgument(
      `invalid image reference ${JSON.stringify(reference)}: ${why} ` +
        '(expected [registry[:port]/]repository[:tag][@sha256:digest], e.g. registry.example.com/app:1)',
    );
  if (reference === '') throw fail('it is empty');
  if (/\s/.test(reference)) throw fail('it contains whitespace');
  if (reference.includes('://')) throw fail('drop the transport prefix (such as docker://)');

  let name = reference;
  let digest = '';
  const at = reference.indexOf('@');
  if (at >= 0) {
    digest = reference.slice(at + 1);
    name = reference.slice(0, at);
    if (!SHA256_DIGEST.test(digest)) {
      throw fail('the digest must be sha256: followed by 64 lowercase hex digits');
    }
  }

  let tag = '';
  const lastColon = name.lastIndexOf(':');
  // A colon before the last slash belongs to the registry's port, not to a tag.
  if (lastColon > name.lastIndexOf('/')) {
    tag = name.slice(lastColon + 1);
    name = name.slice(0, lastColon);
    if (!TAG.test(tag)) {
      throw fail(`the tag ${JSON.stringify(tag)} is not valid (letters, digits, _ . -; at most 128)`);
    }
  }
  if (tag === '' && digest === '') tag = DEFAULT_TAG;

  let registry = DOCKER_HUB;
  let repository = name;
  const slash = name.indexOf('/');
  if (slash >= 0) {
    const first = name.slice(0, slash);
    // Docker's rule: the first component is a registry host when it cannot be a repository path
    // component, that is when it has a dot, a port, uppercase letters, or is `localhost`.
    if (
      first.includes('.') ||
      first.includes(':') ||
      first === 'localhost' ||
      first !== first.toLowerCase()
    ) {
      registry = first;
      repository = name.slice(slash + 1);
      if (!DOMAIN.test(registry)) throw fail(`the registry ${JSON.stringify(registry)} is not a valid host`);
    }
  }
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (repository === '') throw fail('the repository name is missing');
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;

  for (const component of repository.split('/')) {
    if (component !== component.toLowerCase()) throw fail('repository names must be lowercase');
    if (!PATH_COMPONENT.test(component)) {
      throw fail(
        `the repository component ${JSON.stringify(component)} is not valid ` +
          '(lowercase letters and digits, separated by one . or _, two _, or dashes)',
      );
    }
  }
  if (registry.length + 1 + repository.length > MAX_NAME_LENGTH) {
    throw fail(`the name is longer than ${MAX_NAME_LENGTH} characters`);
  }
  return { registry, repository, tag, digest };
}

/** The fully qualified form, as skopeo's `docker://` transport wants it (without the prefix). */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}
