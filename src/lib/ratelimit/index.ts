export { TokenBucket, type TokenBucketOptions } from './bucket.js';
export { throttle, throttled } from './throttle.js';
