/**
 * Where a machine's image may come from (docs/images.md): Hangar's registry only from the machine's own
 * app's space (`<registry>/<app>/…`), other registries only where the pull policy allows them. Checked
 * when a machine is created or updated, and the part about app spaces again at every boot.
 */
import { HangarError, invalidArgument } from '../shared/errors.js';
import { parseReference } from '../shared/image-reference.js';
import { checkRegistryHost, isOwnRegistry, type RegistryPolicy } from '../shared/registry-policy.js';

/** Throws when `image` is in Hangar's registry but outside the space of the app named `appName`. */
export function checkOwnRegistrySpace(image: string, appName: string, policy: RegistryPolicy): void {
  const ref = parseReference(image);
  if (!isOwnRegistry(ref.registry, policy)) return;
  const space = ref.repository.split('/')[0]!;
  const yours = `${ref.registry}/${appName}/<name>`;
  if (!ref.repository.includes('/')) {
    throw invalidArgument(
      `config.image: ${image} is outside every app's space in Hangar's registry; push it to ${yours} ` +
        'with a token of the app, and use that name',
    );
  }
  if (space !== appName) {
    throw new HangarError(
      'forbidden',
      `config.image: ${image} is in the space of app "${space}" in Hangar's registry; a machine of app ` +
        `"${appName}" may use only its own app's images (${yours}), public images, and registries the operator allows`,
    );
  }
}

/** Both rules: the app's own space in Hangar's registry, and the pull policy for every other registry. */
export async function checkMachineImage(
  image: string,
  appName: string,
  policy: RegistryPolicy,
): Promise<void> {
  checkOwnRegistrySpace(image, appName, policy);
  const ref = parseReference(image);
  if (isOwnRegistry(ref.registry, policy)) return;
  await checkRegistryHost(ref.registry, policy).catch((error: unknown) => {
    // Said in the words of the field, so that the client knows which part of its request was refused.
    if (HangarError.is(error)) throw new HangarError(error.code, `config.image: ${error.message}`);
    throw error;
  });
}
