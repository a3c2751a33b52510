import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { engines, openTestStore, type TestStore } from '../../test/helpers/store.ts';
import { createWorkspace } from '../workspaces/workspaces.ts';
import { maxPendingLogWrites, RequestLogWriter } from './request-logging.ts';
import type { CallState } from './pipeline.ts';

describe.each(engines)('prompt log writer on %s', (engine) => {
  let t: TestStore;
  beforeAll(async () => {
    t = await openTestStore(engine);
  });
  afterAll(async () => t?.close());

  const callOf = (workspaceId: string, requestId: string, enabled: boolean) =>
    ({ requestId, workspace: { id: workspaceId, logging: { enabled, retentionDays: 7 } } }) as unknown as CallState;

  it('stores opted-in calls, nothing for the others, and drops (counting) what exceeds its in-flight bound', async () => {
    const ws = (await createWorkspace(t.store.db, { name: 'logged' })).id;
    const writer = new RequestLogWriter(t.store.db, pino({ level: 'silent' }));
    writer.write(callOf(ws, 'req_not_logged', false), { prompt: 'private' }, { answer: 'private' });
    // All in one turn of the event loop: none has reached the store when the next is queued.
    const total = maxPendingLogWrites + 10;
    for (let i = 0; i < total; i++) writer.write(callOf(ws, `req_logged_${String(i).padStart(3, '0')}`, true), { prompt: `p${i}` }, { answer: `a${i}` });
    expect(writer.dropped).toBe(10);
    await writer.drain();
    const rows = await t.store.db.selectFrom('request_logs').select(['id', 'request_body', 'response_body']).where('workspace_id', '=', ws).orderBy('id').execute();
    expect(rows).toHaveLength(maxPendingLogWrites);
    expect(rows[0]).toEqual({ id: 'req_logged_000', request_body: '{"prompt":"p0"}', response_body: '{"answer":"a0"}' });
    expect(rows.some((r) => r.id === 'req_not_logged')).toBe(false);
    // Once the store has caught up, writes are accepted again.
    writer.write(callOf(ws, 'req_after', true), 'later', null);
    await writer.drain();
    expect(writer.dropped).toBe(10);
    expect(await t.store.db.selectFrom('request_logs').select('id').where('id', '=', 'req_after').executeTakeFirst()).toEqual({ id: 'req_after' });
  });
});
