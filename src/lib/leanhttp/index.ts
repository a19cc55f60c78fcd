export { ConnectionPool, MAX_POST_BODY, type ConnectionPoolOptions } from './pool.js';
export { isLeanSocket, MAX_INTERIM_WAIT_MS, TransportError, type LeanResponse, type ExchangeTimeouts } from './connection.js';
export { ProgressWindow, WINDOW_PROGRESS_BYTES } from './window.js';
export { ResponseParser, ResponseParseError, MAX_HEAD_BYTES, type ResponseHead, type ParserEvents } from './parser.js';
export { SlabPool, SLAB_BYTES } from './slabs.js';
export { bodyText } from './text.js';
