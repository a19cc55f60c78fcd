export { TokenTable, bearerToken, constantTimeEqual, allows, MIN_TOKEN_LENGTH, type Role, type TokenEntry } from './tokens.js';
export { PeerCredential, PEER_HEADER } from './peer.js';
export { AccessGate, PEER_ONLY_HEADERS, type Access, type AuthSettings } from './gate.js';
export { ClientCredentials } from './client.js';
export { endpointKey, newAdminToken, publishToken, publishedTokenFor, tokenDir, unpublishToken, writeDataDirToken } from './localtoken.js';
export { authFromEnvironment } from './env.js';
export { FailedAttempts, ThrottledError, DEFAULT_ATTEMPT_LIMITS, type AttemptLimits, type AttemptServer, type ClientAddress } from './attempts.js';
