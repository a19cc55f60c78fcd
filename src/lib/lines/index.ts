export { allocateLine, maxMinFair, type ClassDemand, type Share } from './allocate.js';
export { LineCoordinator, type LeaseGrant, type LeaseRequest, type CoordinatorOptions } from './coordinator.js';
export { ClassBucket, TRAFFIC_CLASSES, type TrafficClass } from './classbucket.js';
export { LineLease, boundGrant, DEFAULT_LEASE_MS, DEFAULT_RENEW_MS, MAX_LEASE_LEASES, type CappedGrant, type LineLeaseOptions, type LineState } from './lease.js';
