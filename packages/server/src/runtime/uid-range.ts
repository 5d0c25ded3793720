import { HangarError } from '../shared/errors.js';
/**
 * Every app gets its own range of 65,536 host uids and gids for its machines' user namespaces: root in a
 * machine is uid `hostId` on the host, which owns nothing outside that app's rootfs and volumes, and is
 * a different uid from any other app's root. Ranges start above the host's own users and ids.
 */
export const UID_RANGE_SIZE = 65_536;
const FIRST_HOST_ID = 0x10_0000; // 1,048,576: far above ordinary users and the usual subuid ranges
const MAX_APPS = Math.floor((0xffff_fffe - FIRST_HOST_ID) / UID_RANGE_SIZE);

export interface UidMapping {
  /** The host uid (and gid) that uid 0 inside the machine maps to. */
  hostId: number;
  size: number;
}

export function uidRangeForApp(appInternalNumericId: number): UidMapping {
  if (
    !Number.isInteger(appInternalNumericId) ||
    appInternalNumericId < 1 ||
    appInternalNumericId > MAX_APPS
  ) {
    throw new HangarError(
      'failed_precondition',
      `app number ${appInternalNumericId} has no uid range (1 to ${MAX_APPS} are available)`,
    );
  }
  return { hostId: FIRST_HOST_ID + appInternalNumericId * UID_RANGE_SIZE, size: UID_RANGE_SIZE };
}
