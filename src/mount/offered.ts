import type { StatResult } from '../client/index.js';
import type { FuseAddon, FuseSession, OfferedStats } from './native.js';
import type { Lease } from './pages.js';

/** The addon's part (native/fuse/offered.h). */
export type OfferAddon = Pick<FuseAddon, 'offerFile' | 'offer' | 'withdraw' | 'offeredStats' | 'offersPageSizes'>;

interface OfferedFile {
  id: number;
  size: number;
  /** The size its pages are counted in: a file id's pages are all of one size. */
  pageSize: number;
  /** Open handles reading this version. */
  readers: number;
}

interface Offer {
  fileId: number;
  index: number;
  offerId: number;
  /** One lease per reader window holding the page: all of the same page, so the same chunks. */
  leases: Lease[];
}

const fileKey = (file: StatResult, pageSize: number): string => `${pageSize}\0${file.mount}\0${file.path}\0${file.version}`;

/**
 * Pages offered to the addon, so that its FUSE threads answer the reads that lie in them without
 * a trip to this thread per read (native/fuse/offered.h). What is offered is exactly what the
 * readers' readahead windows hold (reader.ts): a page is offered when the first window takes it
 * and withdrawn when the last one lets it go, so readers of one file share the offer and the
 * memory bound is the windows' own. A withdrawn page a FUSE thread is still writing from keeps
 * its lease until the addon says it is done (OPS.RETURNED): its buffers go back to the receive
 * slabs only then.
 */
export class OfferedPages {
  private session: FuseSession | undefined;
  private readonly files = new Map<string, OfferedFile>();
  private readonly filesById = new Map<number, OfferedFile>();
  private readonly offers = new Map<string, Offer>();
  /** Withdrawn while a FUSE thread wrote from them: released when the addon returns them. */
  private readonly returning = new Map<number, Lease>();
  private nextFileId = 1;
  private nextOfferId = 1;

  constructor(
    private readonly addon: OfferAddon,
    /** The page size the addon was mounted with (its default for a handle). */
    private readonly sessionPageSize: number,
  ) {}

  /** The FUSE session once mounted; until then (and with an addon without `offer`) nothing is offered. */
  attach(session: FuseSession): void {
    if (typeof this.addon.offer === 'function' && typeof this.addon.offerFile === 'function' && typeof this.addon.withdraw === 'function') {
      this.session = session;
    }
  }

  get enabled(): boolean {
    return this.session !== undefined;
  }

  /**
   * Handle `fh` (not yet answered to the kernel, or moved to a new page size) reads `file` in
   * pages of `pageSize`: its reads may be answered from the pages offered for this version and
   * size. The file id to offer pages under, or undefined when off. Pages of two sizes are never
   * under one file id, and the addon plans each read in its handle's one file id (offered.h).
   */
  open(fh: number, file: StatResult, pageSize = this.sessionPageSize): number | undefined {
    if (!this.session) return undefined;
    // An addon that counts every handle in the mount option's page size is offered no other.
    if (pageSize !== this.sessionPageSize && this.addon.offersPageSizes !== true) return undefined;
    const key = fileKey(file, pageSize);
    let entry = this.files.get(key);
    if (!entry) {
      entry = { id: this.nextFileId++, size: file.size, pageSize, readers: 0 };
      this.files.set(key, entry);
      this.filesById.set(entry.id, entry);
    }
    entry.readers++;
    this.addon.offerFile!(this.session, fh, entry.id, file.size, pageSize);
    return entry.id;
  }

  /** A handle of `file` in pages of `pageSize` was released or moved (its window's pages were let go of first). */
  close(file: StatResult, pageSize = this.sessionPageSize): void {
    const key = fileKey(file, pageSize);
    const entry = this.files.get(key);
    if (entry && --entry.readers <= 0) {
      this.files.delete(key);
      this.filesById.delete(entry.id);
    }
  }

  /**
   * A reader's window holds `lease` on page `index` of file `fileId`: the page is offered (if no
   * other window has it offered already). Returns the lease for the window to hold instead: its
   * release lets go of this holder, and the last one withdraws the offer.
   */
  hold(fileId: number, index: number, lease: Lease): Lease {
    if (!this.session) return lease;
    const key = `${fileId}:${index}`;
    let offer = this.offers.get(key);
    if (!offer) {
      const file = this.filesById.get(fileId);
      // The addon answers reads from the chunks as the whole page: a page of another length is
      // never offered (its reads still come here, and are answered as before).
      const expected = file ? Math.max(0, Math.min(file.pageSize, file.size - index * file.pageSize)) : -1;
      const bytes = lease.chunks.reduce((sum, chunk) => sum + chunk.length, 0);
      if (bytes !== expected || bytes === 0) return lease;
      const offerId = this.nextOfferId++;
      if (!this.addon.offer!(this.session, fileId, index, lease.chunks, offerId)) return lease;
      offer = { fileId, index, offerId, leases: [] };
      this.offers.set(key, offer);
    }
    offer.leases.push(lease);
    const held = offer;
    let released = false;
    return {
      chunks: lease.chunks,
      release: () => {
        if (released) return;
        released = true;
        this.letGo(key, held, lease);
      },
    };
  }

  /** The addon's FUSE threads are done with these withdrawn offers. */
  returned(offerIds: number[]): void {
    for (const id of offerIds) {
      this.returning.get(id)?.release();
      this.returning.delete(id);
    }
  }

  /** Offers held here, and withdrawn ones still being written from. */
  counts(): { offers: number; returning: number; files: number } {
    return { offers: this.offers.size, returning: this.returning.size, files: this.files.size };
  }

  stats(): OfferedStats | undefined {
    return this.session && this.addon.offeredStats ? this.addon.offeredStats(this.session) : undefined;
  }

  private letGo(key: string, offer: Offer, lease: Lease): void {
    offer.leases.splice(offer.leases.indexOf(lease), 1);
    // Every holder's lease is on the same page (one fetch per page, pages.ts): the chunks stay
    // alive while any of them is held.
    if (offer.leases.length > 0) return lease.release();
    this.offers.delete(key);
    if (this.addon.withdraw!(this.session!, offer.fileId, offer.index)) return lease.release();
    this.returning.set(offer.offerId, lease);
  }
}
