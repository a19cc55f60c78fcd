import { wallClock } from '../../core/clock.js';
import { EndpointPreference } from './endpoints.js';
import { EndpointStateFile, endpointStatePath, normalizeEndpoint } from './endpointstate.js';

/**
 * One EndpointPreference per endpoint list in a process: the gRPC client (membership, release
 * watches) and the JSON one (release index) of the same etcd learn together, so a member one of
 * them found hung costs the other no deadline. Keyed by the endpoints normalized, in their order
 * (a preference speaks of endpoints by index). Each starts from the state file (endpointstate.ts),
 * read when the first is made: a command that never talks to etcd never reads it.
 */
const shared = new Map<string, EndpointPreference>();
let stateFile: EndpointStateFile | undefined;

export function sharedEndpointPreference(endpoints: readonly string[]): EndpointPreference {
  const key = endpoints.map(normalizeEndpoint).join(' ');
  let preference = shared.get(key);
  if (preference === undefined) {
    const file = (stateFile ??= new EndpointStateFile(endpointStatePath()));
    const made: EndpointPreference = new EndpointPreference([...endpoints], wallClock, {
      saved: file.load(endpoints),
      onChange: () => file.save(endpoints, made.saved()),
    });
    shared.set(key, made);
    preference = made;
  }
  return preference;
}

/** Forgets every shared preference, and the state file's location (FANOUT_ETCD_STATE is read again): for tests. */
export function forgetSharedEndpointPreferences(): void {
  shared.clear();
  stateFile = undefined;
}
