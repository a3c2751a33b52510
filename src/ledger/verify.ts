// `tollgate ledger verify`: recomputes every invariant of the ledger from its append-only history
// and reports each violation. An empty list means every stored number is explained by the entries.
import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import { toBigInt } from './money.ts';

export interface Violation {
  check: string;
  subject: string;
  detail: string;
}

export async function verifyLedger(db: Kysely<Database>): Promise<Violation[]> {
  const out: Violation[] = [];
  const add = (check: string, subject: string, detail: string) => out.push({ check, subject, detail });

  const accounts = await db.selectFrom('accounts').selectAll().execute();
  const sums = await db
    .selectFrom('transfers')
    .select(['debit_account_id', 'credit_account_id', sql<bigint>`sum(amount_micros)`.as('total'), 'kind'])
    .groupBy(['debit_account_id', 'credit_account_id', 'kind'])
    .execute();
  const credited = new Map<string, bigint>();
  const debited = new Map<string, bigint>();
  const byKindDebited = new Map<string, bigint>();
  for (const s of sums) {
    const total = toBigInt(s.total);
    credited.set(s.credit_account_id, (credited.get(s.credit_account_id) ?? 0n) + total);
    debited.set(s.debit_account_id, (debited.get(s.debit_account_id) ?? 0n) + total);
    const k = `${s.debit_account_id}:${s.kind}`;
    byKindDebited.set(k, (byKindDebited.get(k) ?? 0n) + total);
  }
  const pendingRows = await db
    .selectFrom('holds')
    .select(['account_id', sql<bigint>`sum(amount_micros)`.as('total')])
    .where('status', '=', 'pending')
    .groupBy('account_id')
    .execute();
  const pending = new Map(pendingRows.map((r) => [r.account_id, toBigInt(r.total)]));
  const lotRows = await db
    .selectFrom('lots')
    .select(['account_id', 'source', sql<bigint>`sum(remaining_micros)`.as('remaining'), sql<bigint>`sum(amount_micros)`.as('amount')])
    .groupBy(['account_id', 'source'])
    .execute();
  const lotRemaining = new Map<string, bigint>();
  const purchased = new Map<string, bigint>();
  for (const r of lotRows) {
    lotRemaining.set(r.account_id, (lotRemaining.get(r.account_id) ?? 0n) + toBigInt(r.remaining));
    if (r.source === 'purchase') purchased.set(r.account_id, (purchased.get(r.account_id) ?? 0n) + toBigInt(r.amount));
  }

  let allCredits = 0n;
  let allDebits = 0n;
  for (const a of accounts) {
    const cp = toBigInt(a.credits_posted);
    const dp = toBigInt(a.debits_posted);
    allCredits += cp;
    allDebits += dp;
    if (cp !== (credited.get(a.id) ?? 0n)) add('account_credits', a.id, `stored credits ${cp} != summed entries ${credited.get(a.id) ?? 0n}`);
    if (dp !== (debited.get(a.id) ?? 0n)) add('account_debits', a.id, `stored debits ${dp} != summed entries ${debited.get(a.id) ?? 0n}`);
    const pend = toBigInt(a.debits_pending);
    if (pend !== (pending.get(a.id) ?? 0n)) add('account_pending', a.id, `stored pending ${pend} != pending holds ${pending.get(a.id) ?? 0n}`);
    if (a.workspace_id === null) continue;
    const balance = cp - dp;
    const remaining = lotRemaining.get(a.id) ?? 0n;
    const expected = balance > 0n ? balance : 0n;
    if (remaining !== expected) add('lots_cover_balance', a.id, `lots hold ${remaining} but the positive balance is ${expected}`);
    const consumed = toBigInt(a.consumed_micros);
    if (consumed !== (byKindDebited.get(`${a.id}:usage`) ?? 0n)) add('consumed_total', a.id, `consumed ${consumed} != usage transfers ${byKindDebited.get(`${a.id}:usage`) ?? 0n}`);
    const expired = toBigInt(a.expired_micros);
    if (expired !== (byKindDebited.get(`${a.id}:expiry`) ?? 0n)) add('expired_total', a.id, `expired ${expired} != expiry transfers ${byKindDebited.get(`${a.id}:expiry`) ?? 0n}`);
    const bought = toBigInt(a.purchased_micros);
    if (bought !== (purchased.get(a.id) ?? 0n)) add('purchased_total', a.id, `purchased ${bought} != purchase lots ${purchased.get(a.id) ?? 0n}`);
  }
  if (allCredits !== allDebits) add('books_balance', 'ledger', `all credits ${allCredits} != all debits ${allDebits}`);

  const lots = await db
    .selectFrom('lots')
    .leftJoin(
      db.selectFrom('lot_consumptions').select(['lot_id', sql<bigint>`sum(amount_micros)`.as('used')]).groupBy('lot_id').as('c'),
      'c.lot_id',
      'lots.id',
    )
    .select(['lots.id', 'lots.amount_micros', 'lots.remaining_micros', 'lots.repaid_micros', 'c.used'])
    .execute();
  for (const l of lots) {
    const amount = toBigInt(l.amount_micros);
    const remaining = toBigInt(l.remaining_micros);
    const used = toBigInt(l.used);
    const repaid = toBigInt(l.repaid_micros);
    if (remaining < 0n) add('lot_non_negative', l.id, `remaining ${remaining}`);
    if (remaining !== amount - repaid - used) add('lot_history', l.id, `remaining ${remaining} != amount ${amount} - repaid ${repaid} - consumed ${used}`);
  }

  const transferUse = await db
    .selectFrom('transfers')
    .leftJoin(
      db.selectFrom('lot_consumptions').select(['transfer_id', sql<bigint>`sum(amount_micros)`.as('used')]).groupBy('transfer_id').as('c'),
      'c.transfer_id',
      'transfers.id',
    )
    .select(['transfers.id', 'transfers.kind', 'transfers.amount_micros', 'transfers.overdrawn_micros', 'c.used'])
    .where('transfers.kind', 'in', ['usage', 'expiry'])
    .execute();
  for (const t of transferUse) {
    const amount = toBigInt(t.amount_micros);
    const covered = toBigInt(t.used) + toBigInt(t.overdrawn_micros);
    if (covered !== amount) add('debit_explained_by_lots', t.id, `${t.kind} of ${amount} explained by lots+overdrawn ${covered}`);
  }

  const holds = await db
    .selectFrom('holds')
    .leftJoin(
      db.selectFrom('transfers').select(['hold_id', sql<bigint>`count(*)`.as('n'), sql<bigint>`sum(amount_micros)`.as('total')]).where('hold_id', 'is not', null).groupBy('hold_id').as('t'),
      't.hold_id',
      'holds.id',
    )
    .select(['holds.id', 'holds.status', 'holds.settled_micros', 'holds.transfer_id', 't.n', 't.total'])
    .execute();
  for (const h of holds) {
    const n = Number(h.n ?? 0);
    if (!['pending', 'settled', 'voided', 'expired', 'rejected'].includes(h.status)) add('hold_status', h.id, `unknown status ${h.status}`);
    if (h.status === 'settled') {
      const settled = toBigInt(h.settled_micros);
      if (h.settled_micros === null) add('hold_settled_amount', h.id, 'settled without an amount');
      if (settled > 0n && (n !== 1 || toBigInt(h.total) !== settled)) add('hold_settled_once', h.id, `settled ${settled} but has ${n} transfers totalling ${toBigInt(h.total)}`);
      if (settled === 0n && n !== 0) add('hold_settled_once', h.id, `settled at zero but has ${n} transfers`);
    } else if (n !== 0) {
      add('hold_settled_once', h.id, `${h.status} hold has ${n} usage transfers`);
    }
  }
  await verifyBudgets(db, add);
  return out;
}

/** Each key budget counter equals what its holds reserved (pending) and settled (posted). */
async function verifyBudgets(db: Kysely<Database>, add: (check: string, subject: string, detail: string) => void): Promise<void> {
  const counters = await db.selectFrom('budget_counters').selectAll().execute();
  if (counters.length === 0) return;
  const holds = await db.selectFrom('holds').select(['status', 'amount_micros', 'settled_micros', 'budget_ids']).where('budget_ids', 'is not', null).execute();
  const expected = new Map<string, { pending: bigint; posted: bigint }>();
  for (const h of holds) {
    for (const id of JSON.parse(h.budget_ids!) as string[]) {
      const e = expected.get(id) ?? { pending: 0n, posted: 0n };
      if (h.status === 'pending') e.pending += toBigInt(h.amount_micros);
      if (h.status === 'settled') e.posted += toBigInt(h.settled_micros);
      expected.set(id, e);
    }
  }
  for (const c of counters) {
    const e = expected.get(c.id) ?? { pending: 0n, posted: 0n };
    if (toBigInt(c.pending_micros) !== e.pending) add('budget_pending', c.id, `pending ${toBigInt(c.pending_micros)} != pending holds ${e.pending}`);
    if (toBigInt(c.posted_micros) !== e.posted) add('budget_posted', c.id, `posted ${toBigInt(c.posted_micros)} != settled holds ${e.posted}`);
  }
}
