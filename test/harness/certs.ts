import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface IssuedCert {
  cert: string;
  key: string;
  serial: string;
}

/** A throwaway certificate authority made with openssl, in a temp dir. */
export interface TestCa {
  dir: string;
  /** The CA certificate (PEM file): what clients trust. */
  ca: string;
  /**
   * A certificate signed by this CA for 127.0.0.1 and localhost (server and client use), with
   * the given serial (hex), written to NAME.crt / NAME.key in the CA's dir unless `into` says where.
   */
  issue(name: string, options?: { serial?: string; commonName?: string; into?: { cert: string; key: string } }): Promise<IssuedCert>;
  remove(): Promise<void>;
}

let nextSerial = 0x1000;

/** Makes a CA (P-256 keys: fast to generate) whose certificates are valid for a day. */
export async function makeCa(label = 'fanout-test'): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), `${label}-ca-`));
  const ca = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', caKey, '-out', ca, '-days', '1', '-subj', `/CN=${label} CA`]);
  const extensions = join(dir, 'ext.cnf');
  await writeFile(
    extensions,
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n',
  );
  return {
    dir,
    ca,
    async issue(name, options = {}) {
      const cert = options.into?.cert ?? join(dir, `${name}.crt`);
      const key = options.into?.key ?? join(dir, `${name}.key`);
      const csr = join(dir, `${name}.csr`);
      const serial = options.serial ?? (nextSerial++).toString(16).toUpperCase();
      await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${options.commonName ?? name}`]);
      await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-set_serial', `0x${serial}`, '-days', '1', '-extfile', extensions, '-out', cert]);
      return { cert, key, serial };
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
