// dubsim dashboard: wiring. State lives in JobStore; the live socket feeds it; one
// requestAnimationFrame-throttled render draws whatever changed.

import { api, randomKey } from "./api.js";
import { drawThroughput, perMinute } from "./chart.js";
import { JobStore, STATUSES, TERMINAL } from "./jobs.js";
import { Live } from "./live.js";
import { JobTable, shortId } from "./table.js";

const $ = (id) => document.getElementById(id);
const MY_JOBS_KEY = "dubsim.myJobs"; // ids submitted from this browser (pre-login view)
const MY_JOBS_MAX = 500;
const LOG_MAX = 120;
const CONFIG_FIELDS = ["translation_delay", "error_rate", "rate_limit", "fault_rate", "workers", "auto_process"];
const PRESETS = {
  quick: { duration_s: 2, outcome: "completed" },
  flaky: { duration_s: 2, outcome: "completed", fail_attempts: 1 },
  doomed: { duration_s: 1, outcome: "failed" },
  perm: { duration_s: 1, outcome: "permanently_failed" },
  stuck: { outcome: "stuck" },
};

const state = {
  admin: false,
  sessionKnown: false,
  page: 0,
  pageSize: 50,
  filters: { status: "", plan: "", user: "" },
  log: [],
  logDirty: true,
  clockOffset: null, // local ms - server ms, estimated from event times
  config: null,
  configDirty: false,
  configLoadFailed: false,
  users: new Set(),
  usersShown: 0,
};

let frame = 0;
function scheduleRender() {
  if (!frame) frame = requestAnimationFrame(render);
}

const store = new JobStore(scheduleRender);
const table = new JobTable($("jobs-body"));
const live = new Live({
  subscribe,
  onMessage,
  onState: showConnection,
  onPolicyClose: () => refreshSession().then(() => applyAdminUi()),
});

// ---- live messages --------------------------------------------------------------

async function subscribe(send, since) {
  if (!state.sessionKnown) await refreshSession();
  applyAdminUi();
  const resume = since !== null ? { since } : {};
  if (since === null) store.beginResync();
  if (state.admin) {
    send({ op: "subscribe", all: true, ...resume });
    return 1;
  }
  const ids = myJobs();
  for (let i = 0; i < ids.length; i += 1000) {
    send({ op: "subscribe", jobs: ids.slice(i, i + 1000), ...resume });
  }
  return Math.ceil(ids.length / 1000);
}

function onMessage(msg) {
  switch (msg.type) {
    case "subscribed":
      live.noteSeq(msg.seq);
      break;
    case "snapshot":
      store.apply(msg.job, msg.seq);
      live.noteSeq(msg.seq);
      break;
    case "event":
      onEvent(msg);
      live.noteSeq(msg.seq);
      break;
    case "reset":
      // The gap is gone from the server's buffer (or it restarted): fresh snapshots follow.
      live.resetSeq(msg.seq);
      store.beginResync();
      addLog({ type: "reset", text: `resync (${msg.reason})`, at: null });
      break;
    case "error":
      addLog({ type: "error", text: `${msg.code}: ${msg.message}`, at: null });
      if (msg.code === "not_found" && Array.isArray(msg.jobs)) forgetJobs(msg.jobs);
      if ((msg.code === "unauthorized" || msg.code === "forbidden") && state.admin) {
        // Our session is gone (expired, logged out elsewhere, or the server restarted).
        refreshSession().then(() => {
          if (state.admin) return;
          applyAdminUi();
          showError("login-error", "Your admin session has ended. Log in again to see all jobs.");
          live.restart();
        });
      }
      break;
    default:
      break;
  }
}

function onEvent(msg) {
  const job = msg.job;
  if (msg.at) {
    const sample = Date.now() - Date.parse(msg.at);
    if (Number.isFinite(sample) && (state.clockOffset === null || sample < state.clockOffset)) {
      state.clockOffset = sample;
    }
  }
  const changed =
    msg.event_type === "job.deleted" ? store.remove(job.id, msg.seq) : store.apply(job, msg.seq);
  if (changed && msg.event_type !== "job.progress") {
    addLog({ type: msg.event_type, job, at: msg.at });
  }
}

function serverNow() {
  return Date.now() - (state.clockOffset || 0);
}

// ---- rendering ------------------------------------------------------------------

function render() {
  frame = 0;
  const now = serverNow();
  const counts = store.counts();
  for (const s of STATUSES) $(`count-${s}`).textContent = fmt(counts[s]);
  $("count-total").textContent = fmt(store.jobs.size);
  $("queue-depth").textContent = fmt(counts.pending);

  const completions = store.recentCompletions(now);
  $("throughput").textContent = String(perMinute(completions, now));
  drawThroughput($("tp-chart"), completions, now);

  renderTable(now);
  if (state.logDirty) renderLog();
}

function matches(job) {
  const f = state.filters;
  if (f.status === "active" ? TERMINAL.has(job.status) : f.status && job.status !== f.status) return false;
  if (f.plan && job.role !== f.plan) return false;
  if (f.user && !job.user_id.toLowerCase().includes(f.user)) return false;
  return true;
}

function renderTable(now) {
  const order = store.order();
  const from = state.page * state.pageSize;
  const page = [];
  let total = 0;
  for (const id of order) {
    const job = store.jobs.get(id).job;
    state.users.add(job.user_id);
    if (!matches(job)) continue;
    if (total >= from && page.length < state.pageSize) page.push(job);
    total += 1;
  }
  const pages = Math.max(1, Math.ceil(total / state.pageSize));
  if (state.page >= pages) {
    state.page = pages - 1;
    scheduleRender();
    return;
  }
  table.render(page, now, state.admin);
  $("empty").hidden = total > 0;
  $("empty").textContent = store.jobs.size ? "No jobs match the filters." : emptyText();
  $("page-info").textContent = `page ${state.page + 1} / ${pages}`;
  $("match-count").textContent = `${fmt(total)} of ${fmt(store.jobs.size)} jobs`;
  $("page-first").disabled = $("page-prev").disabled = state.page === 0;
  $("page-next").disabled = $("page-last").disabled = state.page >= pages - 1;
  if (state.users.size !== state.usersShown && state.users.size <= 500) {
    state.usersShown = state.users.size;
    $("known-users").replaceChildren(
      ...[...state.users].sort().map((u) => Object.assign(document.createElement("option"), { value: u })),
    );
  }
}

function emptyText() {
  return state.admin ? "No jobs yet. Submit one." : "No jobs from this browser yet. Submit one, or log in as admin to see all.";
}

function fmt(n) {
  return (n || 0).toLocaleString("en-US");
}

// ---- events log -----------------------------------------------------------------

function addLog(entry) {
  state.log.push(entry);
  if (state.log.length > LOG_MAX) state.log.splice(0, state.log.length - LOG_MAX);
  state.logDirty = true;
  scheduleRender();
}

function renderLog() {
  state.logDirty = false;
  const items = [];
  for (let i = state.log.length - 1; i >= 0; i--) {
    const e = state.log[i];
    const li = document.createElement("li");
    const time = document.createElement("time");
    const when = e.at ? new Date(e.at) : new Date();
    time.textContent = when.toLocaleTimeString("en-GB", { hour12: false });
    time.dateTime = when.toISOString();
    const type = document.createElement("span");
    const kind = e.type.replace("job.", "");
    type.className = `ev ev-${kind}`;
    type.textContent = kind.replace("permanently_failed", "perm_failed");
    const text = document.createElement("span");
    text.className = "ev-text";
    text.textContent = e.job ? logText(e.type, e.job) : e.text;
    li.append(time, type, text);
    items.push(li);
  }
  $("events-log").replaceChildren(...items);
}

function logText(type, job) {
  let t = `${shortId(job.id)} ${job.user_id} · ${job.role}`;
  if (type === "job.failed" && job.error) t += ` · ${job.error.code} (try ${job.attempt}/${job.max_attempts})`;
  if (type === "job.cancelled" && job.cancel_reason) t += ` · “${job.cancel_reason}”`;
  return t;
}

// ---- connection indicator -------------------------------------------------------

let wasLive = false;

function showConnection(connState, detail) {
  // Whenever the connection comes back the server may have restarted: re-read its config.
  if (connState === "live" && !wasLive && state.sessionKnown) loadConfig();
  wasLive = connState === "live";
  const box = $("conn");
  box.dataset.state = connState;
  $("conn-text").textContent = detail ? `${connState} · ${detail}` : connState;
  box.title = detail || connState;
}

// ---- session --------------------------------------------------------------------

async function refreshSession() {
  try {
    const s = await api("GET", "/v1/session");
    state.admin = Boolean(s && s.admin);
    state.sessionKnown = true;
  } catch {
    state.sessionKnown = false;
  }
}

function applyAdminUi() {
  document.body.dataset.admin = String(state.admin);
  $("login-form").hidden = state.admin;
  $("admin-badge").hidden = !state.admin;
  for (const node of document.querySelectorAll(".admin-only input, .admin-only button, .admin-only select")) {
    node.disabled = !state.admin;
  }
  $("scope-note").textContent = state.admin
    ? "All jobs, live."
    : "Jobs submitted from this browser. Log in as admin to see and manage all jobs.";
  scheduleRender();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("login-token");
  const done = busy(ev.submitter);
  try {
    await api("POST", "/v1/session", { body: { token: input.value } });
    input.value = "";
    hideError("login-error");
    state.admin = true;
    state.sessionKnown = true;
    applyAdminUi();
    live.restart();
    loadConfig();
  } catch (err) {
    showError("login-error", err.status === 401 ? "Invalid admin token (401)." : err.message);
    input.select();
  } finally {
    done();
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await api("DELETE", "/v1/session");
  } catch (err) {
    showError("login-error", err.message);
    return;
  }
  state.admin = false;
  applyAdminUi();
  live.restart();
});

// ---- submit ---------------------------------------------------------------------

function myJobs() {
  try {
    const ids = JSON.parse(localStorage.getItem(MY_JOBS_KEY) || "[]");
    return Array.isArray(ids) ? ids.filter((x) => typeof x === "string") : [];
  } catch {
    return [];
  }
}

function rememberJob(id) {
  const ids = myJobs().filter((x) => x !== id);
  ids.push(id);
  try {
    localStorage.setItem(MY_JOBS_KEY, JSON.stringify(ids.slice(-MY_JOBS_MAX)));
  } catch {
    // storage full or disabled: the job still shows for this page's lifetime
  }
}

/** The server no longer knows these ids (cleaned up, or another database): stop asking. */
function forgetJobs(ids) {
  const gone = new Set(ids);
  try {
    localStorage.setItem(MY_JOBS_KEY, JSON.stringify(myJobs().filter((x) => !gone.has(x))));
  } catch {
    // storage disabled: nothing to forget
  }
}

$("submit-preset").addEventListener("change", (ev) => {
  const preset = PRESETS[ev.target.value];
  $("submit-scenario").value = preset ? JSON.stringify(preset) : "";
});

$("submit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  hideError("submit-error");
  $("submit-ok").textContent = "";
  const body = { role: $("submit-plan").value, target_language: $("submit-lang").value.trim() };
  const raw = $("submit-scenario").value.trim();
  if (raw) {
    try {
      body.scenario = JSON.parse(raw);
    } catch (err) {
      showError("submit-error", `Scenario is not valid JSON: ${err.message}`);
      return;
    }
  }
  const user = $("submit-user").value.trim() || "anonymous";
  const done = busy(ev.submitter);
  try {
    const job = await api("POST", "/v1/jobs", {
      body,
      headers: { "X-User-Id": user, "Idempotency-Key": randomKey() },
    });
    rememberJob(job.id);
    store.applyRest(job);
    if (!state.admin) live.request({ op: "subscribe", jobs: [job.id] });
    $("submit-ok").textContent = `Submitted ${shortId(job.id)}`;
    $("submit-ok").dataset.jobId = job.id;
  } catch (err) {
    showError("submit-error", err.message);
  } finally {
    done();
  }
});

// ---- row actions: cancel (with a reason) and retry -------------------------------

const dialog = $("cancel-dialog");
let cancelId = null;

$("jobs-body").addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button[data-action]");
  if (!btn) return;
  const id = btn.dataset.id;
  if (btn.dataset.action === "cancel") {
    cancelId = id;
    $("cancel-job-id").textContent = shortId(id);
    $("cancel-reason").value = "";
    hideError("cancel-error");
    dialog.showModal();
    $("cancel-reason").focus();
  } else if (btn.dataset.action === "retry") {
    hideError("action-error");
    const done = busy(btn);
    try {
      store.applyRest(await api("POST", `/v1/jobs/${encodeURIComponent(id)}/retry`));
    } catch (err) {
      showError("action-error", `Retry ${shortId(id)}: ${err.message}`, err);
    } finally {
      done();
    }
  }
});

$("cancel-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const reason = $("cancel-reason").value.trim();
  const done = busy($("cancel-confirm"));
  try {
    const job = await api("POST", `/v1/jobs/${encodeURIComponent(cancelId)}/cancel`, {
      body: reason ? { reason } : {},
    });
    store.applyRest(job);
    dialog.close();
  } catch (err) {
    showError("cancel-error", err.message, err);
  } finally {
    done();
  }
});
$("cancel-close").addEventListener("click", () => dialog.close());

// ---- queue operations -----------------------------------------------------------

$("process-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  await opsCall(ev.submitter, async () => {
    const count = Number($("process-count").value);
    const res = await api("POST", "/v1/process", { body: { count } });
    for (const job of res.started || []) store.applyRest(job);
    return `Started ${res.started ? res.started.length : 0} job(s).`;
  });
});

$("cleanup-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  await opsCall(ev.submitter, async () => {
    const age = $("cleanup-age").value.trim();
    const res = await api("POST", "/v1/cleanup", { body: age ? { older_than_s: Number(age) } : {} });
    return `Deleted ${res.deleted} finished job(s).`;
  });
});

async function opsCall(button, fn) {
  hideError("ops-error");
  $("ops-ok").textContent = "";
  const done = busy(button);
  try {
    $("ops-ok").textContent = await fn();
  } catch (err) {
    showError("ops-error", err.message, err);
  } finally {
    done();
  }
}

// ---- runtime config -------------------------------------------------------------

async function loadConfig(force = false) {
  try {
    const cfg = await api("GET", "/v1/config");
    state.config = cfg;
    if (state.configLoadFailed) hideError("config-error");
    state.configLoadFailed = false;
    if (force || !state.configDirty) fillConfig(cfg);
  } catch (err) {
    state.configLoadFailed = true;
    showError("config-error", `Could not load config: ${err.message}`);
  }
}

function fillConfig(cfg) {
  for (const name of CONFIG_FIELDS) {
    const input = $(`cfg-${name}`);
    input.removeAttribute("aria-invalid");
    if (input.type === "checkbox") input.checked = Boolean(cfg[name]);
    else input.value = cfg[name] ?? "";
  }
  state.configDirty = false;
}

$("config-form").noValidate = true;
$("config-form").addEventListener("input", () => {
  state.configDirty = true;
  $("config-ok").textContent = "";
});
$("config-reload").addEventListener("click", () => {
  hideError("config-error");
  loadConfig(true);
});

$("config-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  hideError("config-error");
  $("config-ok").textContent = "";
  const patch = {};
  for (const name of CONFIG_FIELDS) {
    const input = $(`cfg-${name}`);
    input.removeAttribute("aria-invalid");
    let value;
    if (input.type === "checkbox") {
      value = input.checked;
    } else {
      if (input.value.trim() === "" || !Number.isFinite(Number(input.value))) {
        input.setAttribute("aria-invalid", "true");
        showError("config-error", `${name}: a number is required.`);
        input.focus();
        return;
      }
      value = Number(input.value);
    }
    if (!state.config || state.config[name] !== value) patch[name] = value;
  }
  if (!Object.keys(patch).length) {
    $("config-ok").textContent = "No changes.";
    return;
  }
  const done = busy(ev.submitter);
  try {
    const cfg = await api("PATCH", "/v1/config", { body: patch });
    state.config = cfg;
    fillConfig(cfg);
    $("config-ok").textContent = `Saved ${Object.keys(patch).join(", ")}.`;
  } catch (err) {
    const field = err.details && err.details.field;
    const input = field && CONFIG_FIELDS.includes(field) ? $(`cfg-${field}`) : null;
    if (input) input.setAttribute("aria-invalid", "true");
    showError("config-error", err.message, err);
  } finally {
    done();
  }
});

// ---- filters and paging ---------------------------------------------------------

function onFilter() {
  state.filters = {
    status: $("filter-status").value,
    plan: $("filter-plan").value,
    user: $("filter-user").value.trim().toLowerCase(),
  };
  state.page = 0;
  scheduleRender();
}
$("filters").addEventListener("input", onFilter);
$("filters").addEventListener("submit", (ev) => ev.preventDefault());
$("page-size").addEventListener("change", (ev) => {
  state.pageSize = Number(ev.target.value);
  state.page = 0;
  scheduleRender();
});
const goPage = (fn) => () => {
  state.page = Math.max(0, fn(state.page));
  scheduleRender();
};
$("page-first").addEventListener("click", goPage(() => 0));
$("page-prev").addEventListener("click", goPage((p) => p - 1));
$("page-next").addEventListener("click", goPage((p) => p + 1));
$("page-last").addEventListener("click", goPage(() => Number.MAX_SAFE_INTEGER));

// ---- helpers ----------------------------------------------------------------------

function showError(id, text, err) {
  if (err && err.status === 401 && state.admin) {
    refreshSession().then(applyAdminUi);
  }
  const node = $(id);
  node.textContent = text;
  node.hidden = false;
}

function hideError(id) {
  const node = $(id);
  node.hidden = true;
  node.textContent = "";
}

function busy(button) {
  if (!button) return () => {};
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  return () => {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  };
}

// ---- start ----------------------------------------------------------------------

// ETAs count down and the chart slides even when no event arrives.
setInterval(scheduleRender, 1000);

// Config changes are not events: re-read them now and then, unless someone is editing.
setInterval(() => {
  const editing = $("config-form").contains(document.activeElement);
  if (!document.hidden && !state.configDirty && !editing && live.state === "live") loadConfig();
}, 5000);

(async function main() {
  await refreshSession();
  applyAdminUi();
  loadConfig();
  live.start();
  // Exposed for tests and for poking around in the console.
  window.dubsim = { store, live, state };
})();
