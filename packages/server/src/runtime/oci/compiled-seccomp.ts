import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';

/**
 * Reuse of the seccomp filter crun compiled. crun turns a config's seccomp profile into a BPF program
 * with libseccomp at every `run`, which for the machines' profile (an allow-list over five
 * architectures) costs tens of milliseconds of CPU per boot, the largest part of a start after a stop.
 * crun writes the program it loaded into the container's state directory (`seccomp.bpf`, which its
 * `exec` applies to new processes), and takes a ready program in the annotation
 * `run.oci.seccomp_bpf_data` (base64), skipping the compile. So the program of the first boot of a
 * profile is kept, keyed by the profile's exact text, and handed to every later boot of the same
 * profile: the same bytes crun itself produced, so the filter is the same. runc has neither: nothing is
 * kept, nothing is annotated.
 */

export const SECCOMP_BPF_ANNOTATION = 'run.oci.seccomp_bpf_data';
/** A BPF program is an array of 8-byte instructions; the kernel takes at most 4096 of them. */
const BPF_INSTRUCTION_BYTES = 8;
const BPF_MAX_INSTRUCTIONS = 4096;

export class CompiledSeccomp {
  readonly #programs = new Map<string, string>();

  /** The annotation that hands crun the program compiled for `profile`, when one is kept. */
  annotationsFor(profile: unknown): Record<string, string> | undefined {
    const program = this.#programs.get(profileKey(profile));
    return program === undefined ? undefined : { [SECCOMP_BPF_ANNOTATION]: program };
  }

  /**
   * Keeps the program crun wrote for a running container that was started with `profile` (and without
   * the annotation, so crun compiled it). A file that is missing or is no BPF program is ignored.
   */
  async learn(profile: unknown, compiledFile: string): Promise<void> {
    const bytes = await readFile(compiledFile).catch(() => undefined);
    if (
      bytes === undefined ||
      bytes.length === 0 ||
      bytes.length % BPF_INSTRUCTION_BYTES !== 0 ||
      bytes.length / BPF_INSTRUCTION_BYTES > BPF_MAX_INSTRUCTIONS
    ) {
      return;
    }
    this.#programs.set(profileKey(profile), bytes.toString('base64'));
  }
}

function profileKey(profile: unknown): string {
  return createHash('sha256').update(JSON.stringify(profile)).digest('hex');
}
