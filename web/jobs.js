// The dashboard's job state: one Map keyed by job id, changed only by snapshots and events.
//
// Every message carries a full snapshot and a seq, so applying is idempotent: a message
// whose seq is not newer than what we hold for that job is stale and ignored.
//
// After a fresh subscribe or a `reset` the server sends snapshots of everything we cover;
// what we held before may be out of date in any direction (a server restart can even lower
// seqs), so a "resync" accepts the first message for each job regardless of seq and, once
// the snapshots have settled, drops the jobs that no snapshot mentioned (deleted meanwhile).

export const STATUSES = [
  "pending",
  "processing",
  "failed",
  "completed",
  "permanently_failed",
  "cancelled",
];
export const TERMINAL = new Set(["completed", "permanently_failed", "cancelled"]);

const RESYNC_QUIET_MS = 400; // snapshots have settled after this long without one
const THROUGHPUT_WINDOW_MS = 3 * 60 * 1000;

export class JobStore {
  constructor(onChange) {
    this.onChange = onChange;
    this.jobs = new Map(); // id -> {job, seq, gen, created}
    this.gen = 0; // resync generation
    this.resyncing = false;
    this.resyncTimer = null;
    this.orderDirty = true; // ids added or removed: the sorted order must be rebuilt
    this.sorted = [];
    this.completions = new Map(); // id -> finished_at (ms): survives cleanup, feeds the chart
  }

  /** Apply one snapshot (from an event, a snapshot message or a REST answer). */
  apply(job, seq) {
    const held = this.jobs.get(job.id);
    if (held && held.gen === this.gen && seq <= held.seq) return false;
    if (held && seq < 0 && !newerThan(job, held.job)) return false;
    if (!held) this.orderDirty = true;
    this.jobs.set(job.id, {
      job,
      seq: Math.max(seq, held && held.gen === this.gen ? held.seq : -1),
      gen: this.gen,
      created: Date.parse(job.created_at) || 0,
    });
    if (job.status === "completed" && job.finished_at) {
      this.completions.set(job.id, Date.parse(job.finished_at));
    }
    if (this.resyncing) this.touchResync();
    this.onChange();
    return true;
  }

  /** A REST answer has no seq: take it only if we know nothing newer. */
  applyRest(job) {
    return this.apply(job, -1);
  }

  remove(id, seq) {
    const held = this.jobs.get(id);
    if (!held || (held.gen === this.gen && seq <= held.seq)) return false;
    this.jobs.delete(id);
    this.orderDirty = true;
    this.onChange();
    return true;
  }

  /** Snapshots follow: start a new generation; what they don't mention is swept. */
  beginResync() {
    this.gen += 1;
    this.resyncing = true;
    this.touchResync();
  }

  touchResync() {
    clearTimeout(this.resyncTimer);
    this.resyncTimer = setTimeout(() => this.endResync(), RESYNC_QUIET_MS);
  }

  endResync() {
    this.resyncing = false;
    for (const [id, held] of this.jobs) {
      if (held.gen !== this.gen) {
        this.jobs.delete(id);
        this.orderDirty = true;
      }
    }
    this.onChange();
  }

  clear() {
    this.jobs.clear();
    this.orderDirty = true;
    this.onChange();
  }

  /** Ids newest first; rebuilt only when membership changed. */
  order() {
    if (this.orderDirty) {
      const entries = Array.from(this.jobs.values());
      entries.sort((a, b) => b.created - a.created || (a.job.id < b.job.id ? -1 : 1));
      this.sorted = entries.map((e) => e.job.id);
      this.orderDirty = false;
    }
    return this.sorted;
  }

  counts() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const { job } of this.jobs.values()) counts[job.status] = (counts[job.status] || 0) + 1;
    return counts;
  }

  /** Completion times (ms, server clock) within the chart window; older ones are dropped. */
  recentCompletions(now) {
    const out = [];
    for (const [id, at] of this.completions) {
      if (now - at > THROUGHPUT_WINDOW_MS) this.completions.delete(id);
      else out.push(at);
    }
    return out;
  }
}

// A REST answer may race with the stream: prefer a terminal state, then the later update.
function newerThan(a, b) {
  if (TERMINAL.has(b.status)) return false;
  if (TERMINAL.has(a.status)) return true;
  return (a.updated_at || "") > (b.updated_at || "");
}
