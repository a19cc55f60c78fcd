import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { AgentState } from './registry.js';

/** systemd's id of the installation; then where D-Bus (and systems without systemd) keep the same id. */
const MACHINE_ID_FILES = ['/etc/machine-id', '/var/lib/dbus/machine-id'];
/** The kernel's random id of this boot. */
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
/** machine-id(5): an application keys its own hash of the id instead of showing the id. */
const FINGERPRINT_KEY = 'fanout sync host record';

/**
 * What tells this machine from another with the same hostname, in the sync agent's host record:
 * a keyed hash of the machine-id and the boot id, or undefined when neither can be read (not
 * Linux): the record then has no machine, and is taken as this machine's, as before.
 *
 * The machine-id alone is not enough: a VM cloned from a template that was not reset keeps
 * its machine-id, and containers have none (Debian's and Ubuntu's images ship none or an empty
 * one, "uninitialized" before first boot) or the host's, bind-mounted. So the boot id is part of
 * it, not only a fallback: two VMs differ in it even with one machine-id. Containers on one kernel
 * share the boot id, and that is the limit: two of them with one hostname and no machine-id of
 * their own are one machine here (give them --host). What the boot id costs: after a reboot the
 * agent's record of before, if its 15 s lease has not ended yet, is another machine's, so the
 * claim waits for the lease (the dead agent does not rewrite it) and takes it; no error.
 *
 * Hashed because machine-id(5) asks that the id never go on the network as it is: the record
 * is read by whoever reads etcd.
 */
export async function machineFingerprint(read: (file: string) => Promise<string> = (file) => readFile(file, 'utf8')): Promise<string | undefined> {
  const contents = async (file: string) => (await read(file).catch(() => '')).trim();
  let machineId = '';
  for (const file of MACHINE_ID_FILES) {
    machineId = await contents(file);
    if (/^[0-9a-f]{32}$/.test(machineId)) break;
    machineId = '';
  }
  const bootId = await contents(BOOT_ID_FILE);
  if (!machineId && !bootId) return undefined;
  return createHmac('sha256', FINGERPRINT_KEY).update(`${machineId}\n${bootId}`).digest('hex').slice(0, 16);
}

/**
 * Whether a host record is this agent's own (from before a restart): same directory, same
 * machine. A record with no machine was written by an earlier version (or where none could be
 * read): taken as this machine's, so an upgrade's restart takes its record at once. A clone still
 * on the earlier version is then not told apart; once upgraded, its agent is (HOST_IN_USE).
 */
export function isOwnRecord(record: AgentState, mine: AgentState): boolean {
  if (record.dir !== mine.dir) return false;
  return record.machine === undefined || mine.machine === undefined || record.machine === mine.machine;
}

/** "a live sync agent of /srv/a (channel prod)", "… of /srv/a on another machine (…)": the holder, as errors name it. */
export function describeHolder(holder: AgentState, mine: AgentState): string {
  const where = holder.dir === mine.dir ? `${holder.dir} on another machine` : holder.dir;
  return `a live sync agent of ${where} (channel ${holder.channel})`;
}
