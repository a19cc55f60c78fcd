export * from './client/index.js';
export { Worker, type WorkerOptions } from './worker/worker.js';
export { parseWorkerConfig, loadWorkerConfig, type WorkerConfig, type WorkerConfigInput } from './lib/config/index.js';
