export { ROUTES, PAGE_QUERY, HEADERS, pagePath, pathRoute } from './protocol.js';
export {
  ADMIN_BODIES,
  MIN_LOAD_RATE,
  adminLoadSchema,
  adminTargetSchema,
  adminTtlSchema,
  clusterInfoSchema,
  memberSchema,
  pageRefSchema,
  parseAnswer,
  workerStatusSchema,
  type AdminLoad,
  type AdminTarget,
  type AdminTtl,
  type ClusterInfoBody,
} from './schemas.js';
