/** The FUSE mount: a read-only POSIX view of the cluster, through the SDK. */
export { mountFanout, clearStaleMount, type Mounted, type MountLogger } from './mount.js';
export { FanoutFs, type FsOptions, type MountLog } from './fs.js';
export { errnoFor } from './errno.js';
export { FileReader, type PageSource } from './reader.js';
export { InodeTable, ROOT_INO } from './inodes.js';
export { Metadata, type Attributes } from './metadata.js';
export { parseMountOptions, mountOptionsSchema, type MountOptions, type MountOptionsInput } from './options.js';
export { loadAddon, ADDON_PATH } from './native.js';
