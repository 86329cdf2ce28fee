// REST calls. Every failure becomes an ApiError whose message is fit to show inline:
// the server's error code and message, the field for 422s, the wait for 429s.

export class ApiError extends Error {
  constructor(status, body, headers) {
    const err = (body && body.error) || {};
    super(describe(status, err, headers));
    this.status = status;
    this.code = err.code || (status === 0 ? "network_error" : "http_" + status);
    this.details = err.details || {};
    this.retryAfter = headers ? headers.get("Retry-After") : null;
  }
}

function describe(status, err, headers) {
  if (status === 0) return "Network error: the server could not be reached.";
  let text = `${status} ${err.code || "error"}: ${err.message || "request failed"}`;
  const field = err.details && err.details.field;
  if (field && !text.includes(field)) text += ` (field: ${field})`;
  const wait = headers && headers.get("Retry-After");
  if (status === 429) {
    const when = wait ? ` Try again in ${humanDuration(Number(wait))}.` : " Try again later.";
    const why = err.message ? ` (${err.message})` : "";
    return `Rate limit reached${why}.${when}`;
  }
  if (status === 401) text += " Log in with the admin token.";
  return text;
}

// 3540 -> "59 min", 45 -> "45 s", 7200 -> "2 h": what a person reads in a sentence.
export function humanDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "a moment";
  const s = Math.ceil(seconds);
  if (s < 60) return `${s} s`;
  const min = Math.ceil(s / 60);
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60), rest = min % 60;
  return rest ? `${h} h ${rest} min` : `${h} h`;
}

export async function api(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  // Every mutation says it is JSON, even without a body: the server refuses cookie-borne
  // mutations that don't (a cross-site form or no-cors fetch can't send this type).
  if (body !== undefined || method !== "GET") init.headers["Content-Type"] = "application/json";
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new ApiError(0, null, null);
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) throw new ApiError(resp.status, data, resp.headers);
  return data;
}

// An idempotency key that also works outside secure contexts (crypto.randomUUID needs one).
export function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
