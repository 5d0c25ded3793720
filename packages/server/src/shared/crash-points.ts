/**
 * TEST-ONLY crash hook. The crash tests start hangard as a child process with
 * `HANGAR_TEST_CRASH_AT=<point>`; when the daemon reaches that named point it kills itself with SIGKILL,
 * so a test can restart it on the same data directory and check what the start-up repair did with the
 * exact state a crash at that instant leaves. The variable is read once, when this module loads; unset
 * (always, in production) every call is a comparison and nothing else.
 */
export type CrashPoint =
  /** A machine's destroy has recorded `destroying` and not yet removed anything of it. */
  | 'destroy-recorded'
  /** A boot has mounted its volumes (and recorded them) and not yet launched the container. */
  | 'boot-volumes-mounted'
  /** A snapshot has frozen the volume's filesystem and not yet copied or thawed it. */
  | 'snapshot-frozen'
  /** A snapshot's image is published and its record still says `running`. */
  | 'snapshot-published';

const CRASH_AT = process.env.HANGAR_TEST_CRASH_AT;

/** Kills this process at once (no cleanup, as a power loss would) when the test hook names `point`. */
export function crashPoint(point: CrashPoint): void {
  if (CRASH_AT === point) process.kill(process.pid, 'SIGKILL');
}
