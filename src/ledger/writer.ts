// Where the ledger's writes run. Every write is a name and a plain input (src/ledger/write-ops.ts);
// a writer runs it in a group-committed transaction and answers its result. InlineWriter runs
// them in this thread through the store's connection. Because a write is data, another writer can
// run the same writes elsewhere (a worker thread with its own connection was measured; see
// bench/gateway/README.md) without the ledger or its callers changing.
import type { Store } from '../store/db.ts';
import { GroupCommitter, type CommitterOptions, type CommitterStats, type WriteOptions } from './committer.ts';
import { writeOps, type WriteInput, type WriteName, type WriteResult } from './write-ops.ts';

export interface LedgerWriter {
  readonly stats: CommitterStats;
  /** Runs the write named `name` in a transaction; `sortKey` is the workspace account it locks first. */
  write<N extends WriteName>(sortKey: string, name: N, input: WriteInput<N>, opts?: WriteOptions): Promise<WriteResult<N>>;
  /** Resolves once every write submitted so far has committed or failed. */
  drain(): Promise<void>;
  /** Drains, then lets go of whatever the writer holds of its own. */
  close(): Promise<void>;
}

export class InlineWriter implements LedgerWriter {
  readonly committer: GroupCommitter;

  constructor(store: Store, opts: CommitterOptions = {}) {
    this.committer = new GroupCommitter(store, opts);
  }

  get stats(): CommitterStats {
    return this.committer.stats;
  }

  write<N extends WriteName>(sortKey: string, name: N, input: WriteInput<N>, opts?: WriteOptions): Promise<WriteResult<N>> {
    const op = writeOps[name];
    if (op.groupKey) {
      const { groupKey, run } = op;
      return this.committer.submitGrouped(sortKey, { key: groupKey(input), run }, input, opts);
    }
    return this.committer.submit(sortKey, (tx, batch) => op.run(tx, batch, input), opts);
  }

  drain(): Promise<void> {
    return this.committer.drain();
  }

  close(): Promise<void> {
    return this.drain();
  }
}
