export type { Membership, MembershipLogger, MembershipState, MembershipStatus, IgnoredRecord } from './types.js';
export { StaticMembership } from './static.js';
export { EtcdMembership, DEFAULT_MEMBER_PREFIX, type EtcdMembershipOptions } from './etcd.js';
export { LeaseSchedule, type LeaseScheduleOptions, type LeaseStep, type LeaseAction, type LeaseState } from './schedule.js';
export { createEtcdClient, passThroughPolicy, DEFAULT_ETCD_TIMEOUT_MS, type EtcdConnection } from './client.js';
