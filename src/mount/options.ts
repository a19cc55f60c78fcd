import { z } from 'zod';
import { FanoutError } from '../core/errors.js';
import { durationSchema, sizeSchema } from '../lib/config/index.js';
import { parseHedge, type HedgeSetting } from '../lib/cluster/index.js';

/**
 * `fanout mount` settings, validated once, with every default here. The CLI passes its flags
 * as they are; numbers come as strings or numbers.
 */
const count = (min: number, max: number) => z.union([z.number(), z.string()]).pipe(z.coerce.number().int().min(min).max(max));

export const mountOptionsSchema = z
  .object({
    /** Any worker of the cluster. */
    endpoint: z.string().url().default('http://127.0.0.1:7450'),
    /** CA bundle (PEM file) trusted for https:// workers; default FANOUT_CA, else the system store. */
    ca: z.string().min(1).optional(),
    /** How long stat/list answers are reused by the mount and cached by the kernel (staleness it adds). */
    ttl: durationSchema.default('1s'),
    /** Pages fetched ahead of a sequential reader (0 = only what the kernel asks for). */
    readahead: count(0, 256).default(8),
    /**
     * Memory for pages no reader holds (fetched ahead for the next files of a directory, or
     * recently read), shared by all readers of the mount (the kernel's page cache already serves
     * readers of the same file); beyond it the oldest go back to the receive slabs. Kept small:
     * pages kept are slabs out of circulation, and fresh slabs fault in (pages.ts).
     */
    cache: sizeSchema.default('16MiB'),
    /**
     * Memory for the pages reads fetch themselves (pages not fetched ahead: random reads, many
     * readers at once), shared by all readers and held until each reply is sent; beyond it reads
     * wait for room. A read larger than this still goes, alone.
     */
    readMemory: sizeSchema.refine((bytes) => bytes > 0, 'must be more than 0 (0 would bound nothing)').default('256MiB'),
    /** Kernel readahead for the mount (read_ahead_kb), so sequential reads arrive as large requests. */
    kernelReadahead: sizeSchema.default('4MiB'),
    /**
     * Files of at least one page are read with direct I/O, bypassing the kernel's page cache (one
     * copy per byte fewer; readers of one file then share the mount's pages instead). Needs a
     * kernel that allows mmap of such files (≥ 6.6); elsewhere the page cache is kept anyway.
     */
    directIo: z.boolean().default(true),
    /** Let users other than the one who mounted read (needs user_allow_other unless root). */
    allowOther: z.boolean().default(false),
    /** FUSE threads reading requests from the kernel; a read holds one until its pages arrive. */
    threads: count(1, 256).default(32),
    /** When to ask a second worker for a stalled page: 'auto' (from observed latency), ms, or 'off'. */
    hedge: z
      .union([z.number(), z.string()])
      .default('auto')
      .transform((value, ctx): HedgeSetting => {
        try {
          return parseHedge(value);
        } catch (err) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message });
          return z.NEVER;
        }
      }),
  })
  .strict();

export type MountOptionsInput = z.input<typeof mountOptionsSchema>;
export type MountOptions = z.output<typeof mountOptionsSchema>;

export function parseMountOptions(input: MountOptionsInput): MountOptions {
  const result = mountOptionsSchema.safeParse(input);
  if (!result.success) {
    const why = result.error.issues.map((i) => `${i.path.join('.') || 'options'}: ${i.message}`).join('; ');
    throw new FanoutError('INVALID_ARGUMENT', `invalid mount options: ${why}`);
  }
  return result.data;
}
