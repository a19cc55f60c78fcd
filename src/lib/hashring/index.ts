export {
  HashRing,
  ringPosition,
  type HashRingOptions,
  DEFAULT_VNODES_PER_MEMBER,
  DEFAULT_MIN_VNODES,
  DEFAULT_MAX_VNODES,
} from './ring.js';
