export { EtcdJsonClient, EtcdError, prefixEnd, type KeyValue, type Compare } from './client.js';
