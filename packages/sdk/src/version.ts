/** Kept in step with package.json by hand (rootDir is src, so package.json cannot be imported). */
export const SDK_VERSION = '0.1.0';
