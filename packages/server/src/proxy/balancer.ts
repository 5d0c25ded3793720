/**
 * Fly's 3-bucket least-loaded rule (fly-semantics §5.1), pure. Load is seen in three buckets: below the
 * soft limit, at or above soft but below hard, at or above hard. A machine at or above its hard limit
 * gets nothing; one at or above soft only when every candidate is; within the best bucket the least
 * loaded wins and ties are broken at random.
 */

export interface LoadedCandidate {
  readonly load: number;
  readonly soft: number;
  readonly hard: number;
}

export type Bucket = 0 | 1 | 2;

export function bucketOf(c: LoadedCandidate): Bucket {
  if (c.load >= c.hard) return 2;
  return c.load >= c.soft ? 1 : 0;
}

/** The pick, or undefined when every candidate is at its hard limit (or there is none). */
export function pickLeastLoaded<T extends LoadedCandidate>(
  candidates: readonly T[],
  random: () => number = Math.random,
): T | undefined {
  let best: T[] = [];
  let bestBucket: Bucket = 2;
  let bestLoad = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const bucket = bucketOf(c);
    if (bucket === 2) continue;
    if (bucket < bestBucket || (bucket === bestBucket && c.load < bestLoad)) {
      best = [c];
      bestBucket = bucket;
      bestLoad = c.load;
    } else if (bucket === bestBucket && c.load === bestLoad) {
      best.push(c);
    }
  }
  if (best.length === 0) return undefined;
  return best[Math.min(best.length - 1, Math.floor(random() * best.length))];
}

/** Whether some candidate is below its soft limit (else autostart may wake another machine). */
export function anyBelowSoft(candidates: readonly LoadedCandidate[]): boolean {
  return candidates.some((c) => bucketOf(c) === 0);
}

/**
 * `fly-prefer-region: a,b`: candidates of the first listed region that has one able to take the
 * request; all candidates when none has.
 */
export function preferRegions<T extends LoadedCandidate & { readonly region: string }>(
  candidates: readonly T[],
  regions: readonly string[],
): readonly T[] {
  for (const region of regions) {
    const inRegion = candidates.filter((c) => c.region === region && bucketOf(c) < 2);
    if (inRegion.length > 0) return inRegion;
  }
  return candidates;
}
