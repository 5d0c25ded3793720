import { randomBytes, randomFillSync, randomInt } from 'node:crypto';
import { monotonicFactory } from 'ulid';

/** Identifier formats follow Fly's, so that clients which pattern-match ids keep working. */
const LOWER_ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function randomString(alphabet: string, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

/** 14 lowercase hex characters, e.g. `1857156b526dd8`. */
export const newMachineId = () => hex(7);
/** 16 lowercase alphanumerics, e.g. `z4k69dxd8r31p5mx`. */
export const newAppId = () => randomString(LOWER_ALNUM, 16);
export const newOrgId = () => randomString(LOWER_ALNUM, 16);
export const newVolumeId = () => `vol_${randomString(LOWER_ALNUM, 16)}`;
export const newSnapshotId = () => `vs_${randomString(ALNUM, 24)}`;
/** 12 hex characters, e.g. `5c35f65c9f95`. */
export const newLeaseNonce = () => hex(6);
/**
 * The random source of ULIDs: bytes of the system's CSPRNG, drawn 4 KiB at a time (the library's own
 * source asks the CSPRNG once per character, 16 calls per id; the proxy makes one id per request).
 */
const RANDOM_POOL = Buffer.alloc(4096);
let randomAt = RANDOM_POOL.length;
function pooledRandom(): number {
  if (randomAt >= RANDOM_POOL.length) {
    randomFillSync(RANDOM_POOL);
    randomAt = 0;
  }
  return RANDOM_POOL[randomAt++]! / 256;
}

/**
 * 26-character ULID: machine versions (instance ids), events, request ids. Monotonic, so ids minted in
 * the same millisecond still sort in the order they were made (events are listed by id).
 */
export const newUlid = monotonicFactory(pooledRandom);

const ADJECTIVES = [
  'aged',
  'ancient',
  'autumn',
  'billowing',
  'bitter',
  'black',
  'blue',
  'bold',
  'broad',
  'broken',
  'calm',
  'cold',
  'cool',
  'crimson',
  'curly',
  'damp',
  'dark',
  'dawn',
  'delicate',
  'divine',
  'dry',
  'empty',
  'falling',
  'fancy',
  'flat',
  'floral',
  'fragrant',
  'frosty',
  'gentle',
  'green',
  'hidden',
  'holy',
  'icy',
  'jolly',
  'late',
  'lingering',
  'little',
  'lively',
  'long',
  'lucky',
  'misty',
  'morning',
  'muddy',
  'nameless',
  'noisy',
  'old',
  'orange',
  'patient',
  'plain',
  'polished',
  'proud',
  'purple',
  'quiet',
  'rapid',
  'raspy',
  'red',
  'restless',
  'rough',
  'round',
  'royal',
  'shiny',
  'shrill',
  'shy',
  'silent',
  'small',
  'snowy',
  'soft',
  'solitary',
  'sparkling',
  'spring',
  'square',
  'steep',
  'still',
  'summer',
  'super',
  'sweet',
  'throbbing',
  'tight',
  'tiny',
  'twilight',
  'wandering',
  'weathered',
  'white',
  'wild',
  'winter',
  'wispy',
  'withered',
  'yellow',
  'young',
];
const NOUNS = [
  'art',
  'band',
  'bar',
  'base',
  'bird',
  'block',
  'boat',
  'bonus',
  'bread',
  'breeze',
  'brook',
  'bush',
  'butterfly',
  'cake',
  'cell',
  'cherry',
  'cloud',
  'credit',
  'darkness',
  'dawn',
  'dew',
  'disk',
  'dream',
  'dust',
  'feather',
  'field',
  'fire',
  'firefly',
  'flower',
  'fog',
  'forest',
  'frog',
  'frost',
  'glade',
  'glitter',
  'grass',
  'hall',
  'hat',
  'haze',
  'heart',
  'hill',
  'king',
  'lab',
  'lake',
  'leaf',
  'limit',
  'math',
  'meadow',
  'mode',
  'moon',
  'morning',
  'mountain',
  'mouse',
  'mud',
  'night',
  'paper',
  'pine',
  'poetry',
  'pond',
  'queen',
  'rain',
  'recipe',
  'resonance',
  'rice',
  'river',
  'salad',
  'scene',
  'sea',
  'shadow',
  'shape',
  'silence',
  'sky',
  'smoke',
  'snow',
  'snowflake',
  'sound',
  'star',
  'sun',
  'sunset',
  'surf',
  'term',
  'thunder',
  'tooth',
  'tree',
  'truth',
  'union',
  'unit',
  'violet',
  'voice',
  'water',
  'waterfall',
  'wave',
  'wildflower',
  'wind',
  'wood',
];

/** `adjective-noun-NNNN`, e.g. `aged-thunder-7371`. */
export function newMachineName(): string {
  const pick = (list: string[]) => list[randomInt(list.length)]!;
  return `${pick(ADJECTIVES)}-${pick(NOUNS)}-${String(randomInt(10000)).padStart(4, '0')}`;
}
