// The job table: only the rows of the current page exist in the DOM. Rows are kept by job
// id and patched field by field, so a progress tick rewrites one width, not the table.

import { TERMINAL } from "./jobs.js";

const LABELS = { permanently_failed: "perm. failed" };

export class JobTable {
  constructor(tbody) {
    this.tbody = tbody;
    this.rows = new Map(); // id -> {tr, cells, last}
  }

  /** @param {object[]} jobs the page, in order; now: server-clock ms; admin: show actions */
  render(jobs, now, admin) {
    const keep = new Set();
    const trs = [];
    for (const job of jobs) {
      keep.add(job.id);
      let row = this.rows.get(job.id);
      if (!row) {
        row = makeRow(job.id);
        this.rows.set(job.id, row);
      }
      patchRow(row, job, now, admin);
      trs.push(row.tr);
    }
    for (const id of this.rows.keys()) if (!keep.has(id)) this.rows.delete(id);
    const current = this.tbody.children;
    let same = current.length === trs.length;
    for (let i = 0; same && i < trs.length; i++) same = current[i] === trs[i];
    if (!same) this.tbody.replaceChildren(...trs);
  }
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function makeRow(id) {
  const tr = el("tr");
  tr.dataset.id = id;
  const c = {};
  // The whole id, always: it is what people copy into the CLI and the API.
  const idCell = el("td", "c-id");
  c.id = el("code", null, id);
  idCell.append(c.id);
  c.user = el("td", "c-user");
  c.plan = el("td", "c-plan");
  c.planChip = el("span", "plan");
  c.plan.append(c.planChip);
  c.status = el("td", "c-status");
  c.chip = el("span", "chip");
  c.status.append(c.chip);
  c.progress = el("td", "c-progress");
  const wrap = el("div", "progress");
  c.bar = el("div", "bar");
  c.bar.setAttribute("role", "progressbar");
  c.bar.setAttribute("aria-valuemin", "0");
  c.bar.setAttribute("aria-valuemax", "100");
  c.bar.setAttribute("aria-label", `Progress of job ${id}`);
  c.fill = el("span", "fill");
  c.bar.append(c.fill);
  c.pct = el("span", "pct");
  wrap.append(c.bar, c.pct);
  // media jobs only: the running stage, then links to the dubbed video and its captions
  c.media = el("div", "media");
  c.progress.append(wrap, c.media);
  c.attempt = el("td", "c-attempt num");
  c.time = el("td", "c-time");
  // The last error code and the cancel reason share a cell; each is there only when set.
  c.note = el("td", "c-note");
  c.error = el("span", "c-error");
  c.reason = el("span", "c-reason");
  c.actions = el("td", "c-actions");
  tr.append(idCell, c.user, c.plan, c.status, c.progress, c.attempt, c.time, c.note, c.actions);
  return { tr, c, last: {} };
}

function set(row, key, value, fn) {
  if (row.last[key] === value) return;
  row.last[key] = value;
  fn(value);
}

function patchRow(row, job, now, admin) {
  const { c, tr } = row;
  set(row, "status", job.status, (s) => {
    tr.dataset.status = s;
    c.chip.className = `chip s-${s}`;
    c.chip.textContent = LABELS[s] || s;
    c.chip.title = s;
  });
  set(row, "user", job.user_id, (u) => {
    c.user.textContent = u;
    c.user.title = u;
  });
  set(row, "role", job.role, (r) => {
    c.planChip.className = `plan p-${r}`;
    c.planChip.textContent = r;
  });
  const pct = Math.max(0, Math.min(100, job.progress | 0));
  set(row, "progress", `${pct}|${job.status}`, () => {
    c.bar.setAttribute("aria-valuenow", String(pct));
    c.bar.dataset.status = job.status;
    c.fill.style.width = `${pct}%`;
    c.pct.textContent = `${pct}%`;
  });
  set(row, "media", mediaKey(job), () => patchMedia(c.media, job));
  set(row, "attempt", `${job.attempt}/${job.max_attempts}`, (a) => {
    c.attempt.textContent = a;
  });
  set(row, "time", timeText(job, now), (t) => {
    c.time.textContent = t;
    c.time.title = t;
  });
  const err = job.error ? `${job.error.code}: ${job.error.message}` : "";
  const reason = job.cancel_reason || "";
  set(row, "note", `${err}|${reason}`, () => {
    c.error.textContent = job.error ? job.error.code : "";
    c.error.title = err;
    c.reason.textContent = reason;
    c.reason.title = reason;
    c.note.replaceChildren(...[c.error, c.reason].filter((n) => n.textContent));
    c.note.title = [err, reason].filter(Boolean).join(" · ");
  });
  set(row, "actions", `${admin}|${job.status}`, () => {
    c.actions.replaceChildren();
    if (!admin) return;
    if (!TERMINAL.has(job.status)) {
      c.actions.append(button("cancel", job.id, "Cancel", "btn small danger-ghost"));
    }
    if (job.status === "permanently_failed") {
      c.actions.append(button("retry", job.id, "Retry", "btn small"));
    }
  });
}

function mediaKey(job) {
  if (!job.video) return "";
  return `${job.status}|${job.stage || ""}|${job.stage_progress ?? ""}|${job.result_url || ""}`;
}

function patchMedia(box, job) {
  box.replaceChildren();
  if (!job.video) return;
  if (job.status === "processing" && job.stage) {
    box.append(el("span", "stage", `${job.stage} ${job.stage_progress ?? 0}%`));
  } else if (job.status === "completed" && job.result_url) {
    // the signed link, on this origin: it plays without credentials
    const signed = new URL(job.result_url, location.href);
    const links = [
      ["▶ video", signed.pathname + signed.search],
      ["SRT", `/v1/jobs/${job.id}/captions.srt`],
      ["VTT", `/v1/jobs/${job.id}/captions.vtt`],
    ];
    for (const [text, href] of links) {
      const a = el("a", "media-link", text);
      a.href = href;
      a.target = "_blank";
      a.rel = "noopener";
      box.append(a);
    }
  } else if (job.stage && job.status !== "pending") {
    box.append(el("span", "stage", job.stage));
  }
}

function button(action, id, text, cls) {
  const b = el("button", cls, text);
  b.type = "button";
  b.dataset.action = action;
  b.dataset.id = id;
  b.setAttribute("aria-label", `${text} job ${id}`);
  return b;
}

export function shortId(id) {
  return id.length > 10 ? id.slice(0, 8) + "…" : id;
}

const ms = (iso) => (iso ? Date.parse(iso) : NaN);

/** "ETA 4s" while running, "queued 12s" while waiting, "took 3.2s" once done. */
export function timeText(job, now) {
  if (TERMINAL.has(job.status)) {
    const start = ms(job.started_at) || ms(job.created_at);
    const end = ms(job.finished_at) || ms(job.updated_at);
    return end >= start ? `took ${duration(end - start)}` : "";
  }
  if (job.status === "processing") {
    const eta = ms(job.eta);
    if (eta) return eta > now ? `ETA ${duration(eta - now)}` : "overdue";
    return `running ${duration(now - ms(job.started_at))}`;
  }
  if (job.status === "failed") {
    const eta = ms(job.eta);
    return eta && eta > now ? `retry in ${duration(eta - now)}` : "retry due";
  }
  const waited = now - ms(job.created_at);
  return Number.isFinite(waited) ? `queued ${duration(Math.max(0, waited))}` : "queued";
}

export function duration(msec) {
  if (!Number.isFinite(msec)) return "";
  const s = msec / 1000;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 90) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 90) return `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}
