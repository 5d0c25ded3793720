import { once } from 'node:events';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { WAITABLE_STATES, type WaitableState } from '../../machines/states.js';
import { queryDurationToMs } from '../../shared/duration.js';
import { invalidArgument } from '../../shared/errors.js';
import { LIMITS } from '../../shared/limits.js';
import { byCreation, linkNextPage, pageQuery, paginate } from '../pagination.js';
import { leaseNonce, metadataFilters, queryBool, queryInt, queryList, queryString } from '../query.js';
import { principalOf, type RouteDeps } from '../route-context.js';
import {
  CreateMachineBody,
  ExecBody,
  LeaseBody,
  MetadataValueBody,
  SignalBody,
  StopBody,
  signalName,
  UpdateMachineBody,
} from '../schemas.js';
import * as wire from '../serialize.js';
import { parse } from '../validate.js';

type MachineParams = { app_name: string; machine_id: string };
const params = (request: FastifyRequest) => request.params as MachineParams;
const OK = { ok: true } as const;
/** Fly's wait: default 60 s, at most 60 s. */
const WAIT_DEFAULT_SEC = 60;
const WAIT_MAX_SEC = 60;
/** Fly's events endpoint answers the newest 100 unless asked for another `limit`. */
const EVENTS_DEFAULT_LIMIT = 100;

export function machineRoutes(app: FastifyInstance, { platform }: RouteDeps): void {
  const { machines } = platform;
  const base = '/v1/apps/:app_name/machines';
  const one = `${base}/:machine_id`;
  const read = (action: string) => ({ config: { rate: 'machine_read' as const, action } });
  const act = (action: string) => ({ config: { rate: 'machine_action' as const, action } });

  app.get(base, read('machines.list'), async (request, reply) => {
    const { app_name } = request.params as { app_name: string };
    const query = pageQuery(request);
    const states = queryList(request, 'state');
    const region = queryString(request, 'region');
    const views = await machines.list(principalOf(request), app_name, {
      includeDeleted: queryBool(request, 'include_deleted'),
      ...(region ? { region } : {}),
      ...(states.length > 0 ? { states } : {}),
      metadata: metadataFilters(request),
    });
    const summary = queryBool(request, 'summary');
    const page = paginate(views, (view) => byCreation(view.machine), query);
    linkNextPage(request, reply, page.next);
    return page.items.map((view) => wire.machine(view, { summary }));
  });

  app.post(base, act('machine.create'), async (request) => {
    const { app_name } = request.params as { app_name: string };
    const body = parse(CreateMachineBody, request.body, 'body');
    const view = await machines.create(principalOf(request), app_name, createInput(body));
    return wire.machine(view);
  });

  app.get(one, read('machine.get'), async (request) => {
    const { app_name, machine_id } = params(request);
    return wire.machine(await machines.get(principalOf(request), app_name, machine_id));
  });

  app.post(one, act('machine.update'), async (request) => {
    const { app_name, machine_id } = params(request);
    const body = parse(UpdateMachineBody, request.body, 'body');
    const view = await machines.update(
      principalOf(request),
      app_name,
      machine_id,
      { ...createInput(body), ...(body.current_version ? { currentVersion: body.current_version } : {}) },
      leaseNonce(request),
    );
    return wire.machine(view);
  });

  app.delete(one, act('machine.destroy'), async (request) => {
    const { app_name, machine_id } = params(request);
    const force = queryBool(request, 'force') || queryBool(request, 'kill');
    await machines.destroy(principalOf(request), app_name, machine_id, force, leaseNonce(request));
    return OK;
  });

  app.post(`${one}/start`, act('machine.start'), async (request) => {
    const { app_name, machine_id } = params(request);
    const { previousState } = await machines.start(
      principalOf(request),
      app_name,
      machine_id,
      leaseNonce(request),
    );
    return { previous_state: previousState, migrated: false, new_host: '' };
  });

  app.post(`${one}/stop`, act('machine.stop'), async (request) => {
    const { app_name, machine_id } = params(request);
    const body = parse(StopBody, request.body, 'body');
    const signal = body.signal === undefined ? undefined : checkSignal(body.signal);
    await machines.stop(
      principalOf(request),
      app_name,
      machine_id,
      { ...(signal ? { signal } : {}), ...(body.timeout !== undefined ? { timeout: body.timeout } : {}) },
      leaseNonce(request),
    );
    return OK;
  });

  app.post(`${one}/suspend`, act('machine.suspend'), async (request) => {
    const { app_name, machine_id } = params(request);
    await machines.suspend(principalOf(request), app_name, machine_id, leaseNonce(request));
    return OK;
  });

  app.post(`${one}/restart`, act('machine.restart'), async (request) => {
    const { app_name, machine_id } = params(request);
    const timeout = queryString(request, 'timeout');
    // force_stop: kill the workload instead of asking it to stop (the signal and timeout do not matter).
    const signal = queryBool(request, 'force_stop') ? 'SIGKILL' : queryString(request, 'signal');
    await machines.restart(
      principalOf(request),
      app_name,
      machine_id,
      {
        ...(signal ? { signal: checkSignal(signal) } : {}),
        ...(timeout ? { timeoutMs: queryDurationToMs(timeout, 'timeout') } : {}),
      },
      leaseNonce(request),
    );
    return OK;
  });

  app.post(`${one}/signal`, act('machine.signal'), async (request) => {
    const { app_name, machine_id } = params(request);
    const body = parse(SignalBody, request.body, 'body');
    await machines.signal(
      principalOf(request),
      app_name,
      machine_id,
      signalName(body.signal)!,
      leaseNonce(request),
    );
    return OK;
  });

  app.get(`${one}/wait`, { config: { action: 'machine.wait' } }, async (request, reply) => {
    const { app_name, machine_id } = params(request);
    const states = queryList(request, 'state');
    for (const state of states) {
      if (!(WAITABLE_STATES as readonly string[]).includes(state)) {
        throw invalidArgument(`state: cannot wait for "${state}"; use one of ${WAITABLE_STATES.join(', ')}`);
      }
    }
    const timeoutSec = queryInt(request, 'timeout', { min: 1, max: WAIT_MAX_SEC }) ?? WAIT_DEFAULT_SEC;
    const version = queryString(request, 'version') ?? queryString(request, 'instance_id');
    // Stop waiting when the client goes away, so abandoned long-polls hold nothing.
    const abort = new AbortController();
    reply.raw.on('close', () => abort.abort());
    await machines.wait(
      principalOf(request),
      app_name,
      machine_id,
      {
        states: (states.length > 0 ? states : ['started']) as WaitableState[],
        timeoutMs: timeoutSec * 1000,
        ...(version ? { version } : {}),
      },
      abort.signal,
    );
    return OK;
  });

  for (const [verb, cordoned] of [
    ['cordon', true],
    ['uncordon', false],
  ] as const) {
    app.post(`${one}/${verb}`, act(`machine.${verb}`), async (request) => {
      const { app_name, machine_id } = params(request);
      await machines.cordon(principalOf(request), app_name, machine_id, cordoned, leaseNonce(request));
      return OK;
    });
  }

  app.post(`${one}/lease`, act('machine.lease'), async (request, reply) => {
    const { app_name, machine_id } = params(request);
    const body = parse(LeaseBody, request.body, 'body');
    const ttlSec = body.ttl ?? queryInt(request, 'ttl', { min: 1, max: Number.MAX_SAFE_INTEGER });
    const nonce = leaseNonce(request);
    const lease = await machines.acquireLease(principalOf(request), app_name, machine_id, {
      ...(ttlSec !== undefined ? { ttlSec } : {}),
      ...(body.description !== undefined ? { description: body.description } : {}),
      ...(nonce ? { nonce } : {}),
    });
    return reply.status(201).send(wire.lease(lease));
  });

  app.get(`${one}/lease`, read('machine.lease.get'), async (request) => {
    const { app_name, machine_id } = params(request);
    return wire.lease(await machines.getLease(principalOf(request), app_name, machine_id));
  });

  app.delete(`${one}/lease`, act('machine.lease.release'), async (request) => {
    const { app_name, machine_id } = params(request);
    await machines.releaseLease(principalOf(request), app_name, machine_id, leaseNonce(request));
    return OK;
  });

  app.get(`${one}/metadata`, read('machine.metadata.get'), async (request) => {
    const { app_name, machine_id } = params(request);
    return machines.metadata(principalOf(request), app_name, machine_id);
  });

  app.post(`${one}/metadata/:key`, act('machine.metadata.set'), async (request, reply) => {
    const { app_name, machine_id, key } = request.params as MachineParams & { key: string };
    checkMetadataKey(key);
    const { value } = parse(MetadataValueBody, request.body, 'body');
    await machines.patchMetadata(
      principalOf(request),
      app_name,
      machine_id,
      { [key]: value },
      optionalNonce(request),
    );
    return reply.status(204).send();
  });

  app.delete(`${one}/metadata/:key`, act('machine.metadata.delete'), async (request, reply) => {
    const { app_name, machine_id, key } = request.params as MachineParams & { key: string };
    await machines.patchMetadata(
      principalOf(request),
      app_name,
      machine_id,
      { [key]: null },
      optionalNonce(request),
    );
    return reply.status(204).send();
  });

  app.patch(`${one}/metadata`, act('machine.metadata.patch'), async (request) => {
    const { app_name, machine_id } = params(request);
    const { changes, machineVersion } = metadataPatch(request.body);
    return machines.patchMetadata(principalOf(request), app_name, machine_id, changes, {
      ...(machineVersion ? { machineVersion } : {}),
      ...optionalNonce(request),
    });
  });

  // Events and versions, newest first (their ids are ULIDs): the newest `limit`, older ones by cursor.
  app.get(`${one}/events`, read('machine.events'), async (request, reply) => {
    const { app_name, machine_id } = params(request);
    const query = pageQuery(request, EVENTS_DEFAULT_LIMIT);
    const list = await machines.events(principalOf(request), app_name, machine_id);
    const page = paginate(list, (event) => event.id, query, { newestFirst: true });
    linkNextPage(request, reply, page.next);
    return page.items.map(wire.event);
  });

  app.get(`${one}/versions`, read('machine.versions'), async (request, reply) => {
    const { app_name, machine_id } = params(request);
    const query = pageQuery(request);
    const list = await machines.versions(principalOf(request), app_name, machine_id);
    const page = paginate(list, (version) => version.version, query, { newestFirst: true });
    linkNextPage(request, reply, page.next);
    return page.items.map(wire.version);
  });

  app.get(`${one}/ps`, read('machine.ps'), async (request) => {
    const { app_name, machine_id } = params(request);
    return machines.ps(principalOf(request), app_name, machine_id);
  });

  // Hangar's logs endpoint: newline-delimited JSON, the last `tail` lines, then new ones while `follow`.
  app.get(`${one}/logs`, read('machine.logs'), async (request, reply) => {
    const { app_name, machine_id } = params(request);
    const abort = new AbortController();
    reply.raw.on('close', () => abort.abort());
    const lines = await machines.logs(principalOf(request), app_name, machine_id, {
      tailLines: queryInt(request, 'tail', { min: 0, max: 100_000 }) ?? 100,
      follow: queryBool(request, 'follow'),
      signal: abort.signal,
    });
    // Streamed by hand: the answer is open-ended while following, and may be silent for longer than the
    // API's idle timeout, so a followed stream lifts it for its own connection.
    if (queryBool(request, 'follow')) request.raw.socket.setTimeout(0);
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'application/x-ndjson',
      'fly-request-id': String(request.id),
    });
    // Sent now, not with the first line: a follower of a silent machine learns at once that it is in.
    reply.raw.flushHeaders();
    // With backpressure: a reader that stops reading stops the reading of the log (the lines come from
    // an async iterator that reads a chunk at a time), so nothing piles up in hangard.
    for await (const message of lines) {
      if (abort.signal.aborted) break;
      if (!reply.raw.write(`${JSON.stringify({ instance: machine_id, message })}\n`)) {
        await once(reply.raw, 'drain', { signal: abort.signal }).catch(() => undefined);
      }
    }
    reply.raw.end();
  });

  app.post(`${one}/exec`, act('machine.exec'), async (request) => {
    const { app_name, machine_id } = params(request);
    const body = parse(ExecBody, request.body, 'body');
    const timeoutSec = body.timeout ?? 30;
    // The command may print nothing for its whole timeout: the connection outlives it by a margin.
    request.raw.socket.setTimeout(Math.max(request.raw.socket.timeout ?? 0, (timeoutSec + 30) * 1000));
    const result = await machines.exec(principalOf(request), app_name, machine_id, {
      command: body.command ?? ['sh', '-c', body.cmd!],
      timeoutMs: timeoutSec * 1000,
      ...(body.stdin !== undefined ? { stdin: body.stdin } : {}),
    });
    return {
      exit_code: result.exitCode,
      exit_signal: result.exitSignal,
      stdout: result.stdout,
      stderr: result.stderr,
    };
  });
}

function createInput(body: ReturnType<typeof CreateMachineBody.parse>) {
  return {
    config: body.config,
    ...(body.name !== undefined ? { name: body.name } : {}),
    ...(body.region !== undefined ? { region: body.region } : {}),
    ...(body.skip_launch !== undefined ? { skipLaunch: body.skip_launch } : {}),
    ...(body.skip_service_registration !== undefined
      ? { skipServiceRegistration: body.skip_service_registration }
      : {}),
    ...(body.lease_ttl !== undefined ? { leaseTtlSec: body.lease_ttl } : {}),
    ...(body.min_secrets_version !== undefined ? { minSecretsVersion: body.min_secrets_version } : {}),
    ...(body.skip_secrets !== undefined ? { skipSecrets: body.skip_secrets } : {}),
  };
}

function checkSignal(value: string): string {
  const name = signalName(value);
  if (!name) throw invalidArgument(`signal: unknown signal "${value}"; use a name such as SIGTERM`);
  return name;
}

function checkMetadataKey(key: string): void {
  if (key.length > LIMITS.nameChars) {
    throw invalidArgument(`metadata key: at most ${LIMITS.nameChars} characters`);
  }
}

function optionalNonce(request: FastifyRequest): { nonce?: string } {
  const nonce = leaseNonce(request);
  return nonce ? { nonce } : {};
}

/**
 * PATCH metadata bodies come as `{"metadata": {...}, "machine_version": "..."}` or flat `{"k": "v"}`
 * (Fly has not published the layout): accept both. Values are strings, or null/"" to remove.
 */
function metadataPatch(body: unknown): { changes: Record<string, string | null>; machineVersion?: string } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw invalidArgument(
      'request body: expected an object of metadata keys to set (string) or remove (null)',
    );
  }
  const { machine_version: machineVersion, metadata, ...flat } = body as Record<string, unknown>;
  const source =
    typeof metadata === 'object' && metadata !== null ? (metadata as Record<string, unknown>) : flat;
  const changes: Record<string, string | null> = {};
  if (Object.keys(source).length > LIMITS.mapEntries) {
    throw invalidArgument(`metadata: at most ${LIMITS.mapEntries} entries`);
  }
  for (const [key, value] of Object.entries(source)) {
    checkMetadataKey(key);
    if (value !== null && typeof value !== 'string')
      throw invalidArgument(`metadata.${key}: expected a string or null`);
    if (value !== null && value.length > LIMITS.valueChars)
      throw invalidArgument(`metadata.${key}: at most ${LIMITS.valueChars} characters`);
    changes[key] = value;
  }
  if (machineVersion !== undefined && typeof machineVersion !== 'string') {
    throw invalidArgument('machine_version: expected a string');
  }
  return { changes, ...(machineVersion ? { machineVersion } : {}) };
}
