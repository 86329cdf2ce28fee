// The one live connection: a WebSocket to /v1/ws that reconnects with backoff and resumes
// from the last seq it saw (`since`), so nothing is missed across drops and restarts.
//
// States shown by the indicator:
//   connecting    first connection attempt
//   live          socket open and every subscription acknowledged
//   reconnecting  dropped; retrying soon (the first few attempts)
//   offline       the browser is offline, or the server has been unreachable for a while

const BACKOFF_MS = [250, 1000, 2000, 4000, 8000];
const OFFLINE_AFTER_ATTEMPTS = 4;
const PING_EVERY_MS = 15000;
const SILENCE_LIMIT_MS = 40000; // no pong for this long: the socket is dead, replace it

export class Live {
  /**
   * @param {object} opts
   * @param {(send: (msg: object) => void, since: number|null) => Promise<number>} opts.subscribe
   *   sends the subscribe messages for a (re)opened socket; returns how many it sent
   * @param {(msg: object) => void} opts.onMessage
   * @param {(state: string, detail: string) => void} opts.onState
   * @param {(code: number) => void} opts.onPolicyClose  the server refused our credentials
   */
  constructor(opts) {
    this.opts = opts;
    this.ws = null;
    this.since = null; // last seq seen on the subscription; null = start fresh
    this.attempt = 0;
    this.pendingAcks = 0;
    this.timer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.nextId = 1;
    this.state = "connecting";
    window.addEventListener("online", () => this.connectSoon(0));
    window.addEventListener("offline", () => this.goOffline());
  }

  start() {
    this.connect();
  }

  /** Drop the socket and start over without resume (e.g. after login or logout). */
  restart() {
    this.since = null;
    this.attempt = 0;
    this.closeSocket();
    this.setState("connecting", "");
    this.connect();
  }

  noteSeq(seq) {
    if (typeof seq === "number" && (this.since === null || seq > this.since)) this.since = seq;
  }

  resetSeq(seq) {
    this.since = typeof seq === "number" ? seq : null;
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  /** Send a request that expects an acknowledgement; the state is live once all are in. */
  request(msg) {
    const id = this.nextId++;
    if (this.send({ ...msg, id })) this.pendingAcks += 1;
    return id;
  }

  connect() {
    clearTimeout(this.timer);
    if (!navigator.onLine) {
      this.setState("offline", "browser is offline");
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    this.ws = ws;
    this.pendingAcks = 0;
    ws.addEventListener("open", () => this.onOpen(ws));
    ws.addEventListener("message", (ev) => this.onRaw(ws, ev));
    ws.addEventListener("close", (ev) => this.onClose(ws, ev));
    // "error" is always followed by "close"; handling it there keeps one code path.
  }

  async onOpen(ws) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    this.startPings(ws);
    const sent = await this.opts.subscribe((msg) => this.request(msg), this.since);
    if (ws !== this.ws) return;
    if (!sent) this.markLive();
  }

  onRaw(ws, ev) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === "subscribed" || (msg.type === "error" && msg.id !== undefined)) {
      this.pendingAcks = Math.max(0, this.pendingAcks - 1);
      if (this.pendingAcks === 0) this.markLive();
    }
    this.opts.onMessage(msg);
  }

  onClose(ws, ev) {
    if (ws !== this.ws) return;
    this.stopPings();
    this.ws = null;
    if (ev.code === 1008) this.opts.onPolicyClose(ev.code);
    // A slow-consumer close (4000) or "going away" (1001) wants a prompt resume.
    const quick = ev.code === 4000 || ev.code === 1001 || ev.code === 1008;
    this.connectSoon(quick && this.attempt === 0 ? 100 : null, ev);
  }

  connectSoon(delay, ev) {
    clearTimeout(this.timer);
    if (this.ws) return;
    const wait = delay ?? jitter(BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)]);
    this.attempt += 1;
    const why = ev && ev.code && ev.code !== 1006 ? ` (closed ${ev.code}${ev.reason ? ": " + ev.reason : ""})` : "";
    if (!navigator.onLine) {
      this.setState("offline", "browser is offline");
      return;
    }
    const state = this.attempt > OFFLINE_AFTER_ATTEMPTS ? "offline" : "reconnecting";
    this.setState(state, `retry ${this.attempt} in ${Math.max(1, Math.round(wait / 1000))} s${why}`);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  markLive() {
    this.attempt = 0;
    this.setState("live", "");
  }

  startPings(ws) {
    this.stopPings();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
        ws.close(4001, "heartbeat timeout");
        this.onClose(ws, { code: 4001, reason: "heartbeat timeout" });
        return;
      }
      this.send({ op: "ping" });
    }, PING_EVERY_MS);
  }

  stopPings() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  /** The browser says the network is gone: the socket is as good as dead, so drop it now
   * and resume when the "online" event comes. */
  goOffline() {
    this.closeSocket();
    this.setState("offline", "browser is offline");
  }

  closeSocket() {
    const ws = this.ws;
    this.ws = null;
    this.stopPings();
    clearTimeout(this.timer);
    if (ws) ws.close(1000, "restart");
  }

  setState(state, detail) {
    this.state = state;
    this.opts.onState(state, detail);
  }
}

function jitter(ms) {
  return Math.round(ms * (0.75 + Math.random() * 0.5));
}
