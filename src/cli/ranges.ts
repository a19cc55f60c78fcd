import { FanoutError } from '../core/errors.js';

/** "--range START-END" (inclusive END, like HTTP), "START-" or "-SUFFIX" → [start, end). */
export function parseRangeOption(text: string, size: number): { start: number; end: number } {
  const match = /^(\d*)-(\d*)$/.exec(text.trim());
  if (!match || (match[1] === '' && match[2] === '')) {
    throw new FanoutError('INVALID_RANGE', `invalid --range "${text}": expected START-END, START- or -SUFFIX`);
  }
  if (match[1] === '') return { start: Math.max(0, size - Number(match[2])), end: size };
  const start = Number(match[1]);
  if (match[2] !== '' && Number(match[2]) < start) {
    throw new FanoutError('INVALID_RANGE', `--range ${text} is reversed: END ${match[2]} is before START ${start} (both inclusive)`);
  }
  const end = match[2] === '' ? size : Math.min(size, Number(match[2]) + 1);
  if (start >= size || end <= start) throw new FanoutError('RANGE_NOT_SATISFIABLE', `--range ${text} is outside a file of ${size} bytes`);
  return { start, end };
}
