export { CertificateReloader, DEFAULT_TLS_RELOAD_MS, createApiServer, readTlsPair, type CertificateReloaderOptions, type TlsFiles, type TlsLogger, type TlsPair } from './server.js';
export { DEFERRED_EXTRA_CA, certificateHint, deferredRootsPem, deferredTrust, readCa, tlsConnectOptions, type CaOption, type ClientTrust } from './client.js';
