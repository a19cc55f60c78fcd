export { SingleFlight, PageFill } from './singleflight.js';
