export { SingleFlight, PageFill } from './singleflight.js';
export { Semaphore } from './semaphore.js';
export { ByteBudget } from './bytebudget.js';
export { copyPagesAt, writeChunks, type PagesAtOptions, type PositionalTarget } from './positional.js';
