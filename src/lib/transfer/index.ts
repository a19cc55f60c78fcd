export { SingleFlight, PageFill } from './singleflight.js';
export { Semaphore } from './semaphore.js';
