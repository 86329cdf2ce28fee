// The webhooks panel (admin): every endpoint with its status, and the deliveries that are
// failing right now. Read every 5 s while visible; a disabled endpoint can be re-enabled.
import { api } from "./api.js";

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function failing(deliveries) {
  return deliveries.filter((d) => d.status === "failed" || (d.status === "pending" && d.attempts.length));
}

async function refresh() {
  const list = $("webhooks-list");
  if (!list || document.body.dataset.admin !== "true" || document.hidden) return;
  let hooks;
  try {
    hooks = (await api("GET", "/v1/webhooks")).webhooks;
  } catch (err) {
    $("webhooks-error").hidden = false;
    $("webhooks-error").textContent = err.message;
    return;
  }
  $("webhooks-error").hidden = true;
  const items = [];
  for (const hook of hooks.slice(0, 20)) {
    const item = el("li", "hook");
    const head = el("div", "hook-head");
    head.append(el("code", "hook-url", hook.url), el("span", `hook-status ${hook.status}`, hook.status));
    item.append(head);
    const meta = el("div", "muted small", `${hook.id} · owner ${hook.owner} · ${hook.events.join(", ")}`);
    item.append(meta);
    if (hook.disabled_reason) item.append(el("div", "inline-error small", hook.disabled_reason));
    if (hook.status === "disabled") {
      const again = el("button", "btn small", "Re-enable");
      again.type = "button";
      again.addEventListener("click", async () => {
        again.disabled = true;
        try {
          await api("PATCH", `/v1/webhooks/${encodeURIComponent(hook.id)}`, { body: { status: "enabled" } });
        } catch (err) {
          $("webhooks-error").hidden = false;
          $("webhooks-error").textContent = err.message;
        }
        refresh();
      });
      item.append(again);
    }
    try {
      const { deliveries } = await api("GET", `/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries?limit=50`);
      const bad = failing(deliveries).slice(0, 5);
      if (bad.length) {
        const ul = el("ul", "hook-failures small");
        for (const d of bad) {
          const last = d.attempts[d.attempts.length - 1] || {};
          const why = last.error || (last.status_code ? `HTTP ${last.status_code}` : "");
          const next = d.next_attempt_at ? ` · next ${d.next_attempt_at.slice(11, 19)}Z` : "";
          ul.append(el("li", "", `${d.event_type} seq ${d.seq} · ${d.attempts.length} attempts · ${why}${next}`));
        }
        item.append(ul);
      }
    } catch {
      // the endpoint went away meanwhile: the next round shows that
    }
    items.push(item);
  }
  list.replaceChildren(...items);
  $("webhooks-empty").hidden = hooks.length > 0;
}

setInterval(refresh, 5000);
document.addEventListener("visibilitychange", refresh);
new MutationObserver(refresh).observe(document.body, { attributes: true, attributeFilter: ["data-admin"] });
refresh();
