import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseWorkerConfig } from '../../src/lib/config/index.js';
import { repoRoot } from '../harness/workers.js';

/** Offline checks of examples/kubernetes/: every object against the Kubernetes schemas (kubernetes-models), then the references between them. */

const dir = join(repoRoot, 'examples/kubernetes');

// Loose shapes: the schemas are checked by kubernetes-models; here only what the references need.
type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: any; data?: any; stringData?: any };
type Container = { name: string; args?: string[]; command?: string[]; env?: any[]; envFrom?: any[]; ports?: { name?: string; containerPort: number }[]; volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[] };

const MODULES: Record<string, string> = { v1: 'kubernetes-models/v1', 'apps/v1': 'kubernetes-models/apps/v1', 'policy/v1': 'kubernetes-models/policy/v1' };

async function validate(object: K8sObject): Promise<void> {
  const module = MODULES[object.apiVersion];
  assert.ok(module, `no schema module for apiVersion ${object.apiVersion}`);
  const Model = (await import(module))[object.kind];
  assert.ok(Model, `no model for ${object.apiVersion} ${object.kind}`);
  new Model(object).validate();
}

function flag(args: string[] | undefined, name: string): string | undefined {
  return args?.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

describe('kubernetes manifests (examples/kubernetes)', () => {
  let objects: K8sObject[];
  const find = (kind: string, name: string) => {
    const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
    assert.ok(found, `${kind} ${name} exists`);
    return found;
  };
  const containers = (o: K8sObject): Container[] => [...(o.spec.template.spec.initContainers ?? []), ...o.spec.template.spec.containers];
  const container = (o: K8sObject, name: string): Container => {
    const found = containers(o).find((c) => c.name === name);
    assert.ok(found, `${o.kind} ${o.metadata.name} has container ${name}`);
    return found;
  };

  before(async () => {
    objects = [];
    for (const file of (await readdir(dir)).filter((f) => f.endsWith('.yaml')).sort()) {
      for (const doc of parseAllDocuments(await readFile(join(dir, file), 'utf8'))) {
        assert.deepEqual(doc.errors, [], `${file} parses`);
        objects.push(doc.toJS() as K8sObject);
      }
    }
  });

  test('every object is valid against its Kubernetes schema', async () => {
    assert.ok(objects.length >= 8);
    for (const object of objects) await validate(object);
  });

  test('the schema check rejects a broken object (it can fail)', async () => {
    const broken = structuredClone(find('StatefulSet', 'fanout-worker'));
    broken.spec.template.spec.containers[0].ports[0].containerPort = 'seventy-four-fifty';
    await assert.rejects(validate(broken), /containerPort/);
  });

  test('every object lives in the namespace the manifests create', () => {
    const namespaces = objects.filter((o) => o.kind === 'Namespace').map((o) => o.metadata.name);
    for (const o of objects.filter((o) => o.kind !== 'Namespace')) assert.ok(namespaces.includes(o.metadata.namespace!), `${o.kind} ${o.metadata.name}`);
  });

  test('selectors match the pod labels: StatefulSet, DaemonSet, Services, PodDisruptionBudget', () => {
    const sets = objects.filter((o) => o.kind === 'StatefulSet' || o.kind === 'DaemonSet');
    for (const set of sets) assert.ok(matches(set.spec.selector.matchLabels, set.spec.template.metadata.labels), `${set.kind} ${set.metadata.name}`);
    for (const o of objects.filter((o) => o.kind === 'Service' || o.kind === 'PodDisruptionBudget')) {
      const selector = o.kind === 'Service' ? o.spec.selector : o.spec.selector.matchLabels;
      assert.ok(sets.some((s) => matches(selector, s.spec.template.metadata.labels)), `${o.kind} ${o.metadata.name} selects pods`);
    }
  });

  test('the StatefulSet names its headless Service, and every Service port targets a named container port', () => {
    const workers = find('StatefulSet', 'fanout-worker');
    const headless = find('Service', workers.spec.serviceName);
    assert.equal(headless.spec.clusterIP, 'None');
    const portNames = containers(workers).flatMap((c) => (c.ports ?? []).map((p) => p.name));
    for (const service of objects.filter((o) => o.kind === 'Service')) {
      for (const port of service.spec.ports) assert.ok(portNames.includes(port.targetPort), `${service.metadata.name}:${port.port} → ${port.targetPort}`);
    }
  });

  test('the worker config is valid, and its ports, data dir and members match the StatefulSet', () => {
    const workers = find('StatefulSet', 'fanout-worker');
    const worker = container(workers, 'worker');
    const configMap = find('ConfigMap', workers.spec.template.spec.volumes.find((v: any) => v.configMap).configMap.name);
    const configPath = flag(worker.args, 'config')!;
    const configMount = worker.volumeMounts!.find((m) => configPath.startsWith(`${m.mountPath}/`))!;
    const yamlText = configMap.data[posix.basename(configPath)];
    assert.ok(yamlText, `${configPath} is a key of the ConfigMap mounted at ${configMount.mountPath}`);
    const input = parseAllDocuments(yamlText)[0]!.toJS();
    const config = parseWorkerConfig({ ...input, id: 'fanout-worker-0', advertiseUrl: 'http://fanout-worker-0.fanout-worker.fanout.svc.cluster.local:7450' });

    const port = (name: string) => worker.ports!.find((p) => p.name === name)!.containerPort;
    assert.equal(Number(config.listen.split(':').pop()), port('http'));
    assert.equal(Number(flag(worker.args, 's3-listen')!.split(':').pop()), port('s3'));
    assert.equal(String(port('http')), workers.spec.template.metadata.annotations['prometheus.io/port']);
    assert.ok(worker.volumeMounts!.some((m) => m.name === 'data' && m.mountPath === config.dataDir), 'dataDir is the data volume');

    const advertise = flag(worker.args, 'advertise-url')!;
    const ns = workers.metadata.namespace!;
    assert.equal(advertise, `http://$(POD_NAME).${workers.spec.serviceName}.${ns}.svc.cluster.local:${port('http')}`);
    assert.equal(flag(worker.args, 'id'), '$(POD_NAME)');
    const members = config.membership.static!;
    assert.equal(members.length, workers.spec.replicas, 'one static member per replica');
    members.forEach((m, i) => {
      const pod = `${workers.metadata.name}-${i}`;
      assert.equal(m.id, pod);
      assert.equal(m.url, advertise.replace('$(POD_NAME)', pod));
    });
  });

  test('every volume mount, ConfigMap, Secret and secret key referenced exists', () => {
    const secretKeys = (name: string) => Object.keys(find('Secret', name).stringData ?? find('Secret', name).data ?? {});
    for (const set of objects.filter((o) => o.kind === 'StatefulSet' || o.kind === 'DaemonSet')) {
      const volumes = [...set.spec.template.spec.volumes.map((v: any) => v.name), ...(set.spec.volumeClaimTemplates ?? []).map((v: any) => v.metadata.name)];
      for (const c of containers(set)) {
        for (const m of c.volumeMounts ?? []) assert.ok(volumes.includes(m.name), `${set.metadata.name}/${c.name} mounts ${m.name}`);
        for (const e of c.envFrom ?? []) if (e.secretRef) find('Secret', e.secretRef.name);
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef;
          if (ref) assert.ok(secretKeys(ref.name).includes(ref.key), `${ref.name}/${ref.key}`);
        }
      }
      for (const v of set.spec.template.spec.volumes) if (v.configMap) find('ConfigMap', v.configMap.name);
    }
  });

  test('the sync agent and the serving container share one host path: the agent writes DIR, the server reads DIR/current/ read-only', () => {
    const set = objects.find((o) => o.kind === 'DaemonSet')!;
    const sync = container(set, 'sync');
    assert.deepEqual(sync.command!.slice(-2), ['sync', 'ranker']);
    const volume = set.spec.template.spec.volumes.find((v: any) => v.hostPath);
    assert.ok(volume, 'a hostPath volume');
    const syncMount = sync.volumeMounts!.find((m) => m.name === volume.name)!;
    assert.ok(!syncMount.readOnly, 'the agent writes the host path');
    const releaseDir = flag(sync.args, 'dir')!;
    assert.ok(releaseDir.startsWith(`${syncMount.mountPath}/`), `--dir ${releaseDir} is on the host path`);
    const relative = posix.relative(syncMount.mountPath, releaseDir);

    const servers = set.spec.template.spec.containers.filter((c: Container) => c.name !== 'sync') as Container[];
    assert.ok(servers.length >= 1, 'a serving container beside the agent');
    for (const server of servers) {
      const mount = server.volumeMounts!.find((m) => m.name === volume.name)!;
      assert.equal(mount.readOnly, true, `${server.name} mounts the host path read-only`);
      assert.ok(
        (server.args ?? []).some((a) => a.includes(`${posix.join(mount.mountPath, relative, 'current')}/`)),
        `${server.name} reads ${posix.join(mount.mountPath, relative, 'current')}/`,
      );
    }
    // The agent reaches the cluster through the client Service, on its http port.
    const endpoint = new URL(sync.env!.find((e) => e.name === 'FANOUT_ENDPOINT').value);
    const [serviceName, namespace] = endpoint.hostname.split('.');
    const service = find('Service', serviceName!);
    assert.equal(service.metadata.namespace, namespace);
    assert.ok(service.spec.ports.some((p: any) => p.port === Number(endpoint.port)));
    assert.equal(flag(sync.args, 'metrics')!.split(':').pop(), set.spec.template.metadata.annotations['prometheus.io/port']);
  });
});
