export { S3Gateway, type GatewayOptions } from './server.js';
export { Authenticator, MAX_SKEW_MS, type AuthOptions, type Credential, type Principal } from './auth.js';
export { S3Error, s3Errors, toS3Error } from './errors.js';
export { listKeys, encodeToken, decodeToken, compareKeys, type ListRequest, type ListResult, type Position } from './listing.js';
export type { GatewayBackend, GatewayConfig } from './types.js';
