// Completed-per-minute throughput: 36 bars of 5 s each (the last 3 minutes), drawn by hand.

const BUCKET_MS = 5000;
const BUCKETS = 36;

export function perMinute(completions, now) {
  let n = 0;
  for (const at of completions) if (now - at <= 60000) n += 1;
  return n;
}

export function drawThroughput(canvas, completions, now) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 320;
  const cssH = canvas.clientHeight || 64;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);

  // Buckets end at the current bucket boundary so bars slide left as time passes.
  const end = Math.ceil(now / BUCKET_MS) * BUCKET_MS;
  const counts = new Array(BUCKETS).fill(0);
  for (const at of completions) {
    const i = BUCKETS - 1 - Math.floor((end - at) / BUCKET_MS);
    if (i >= 0 && i < BUCKETS) counts[i] += 1;
  }
  const rates = counts.map((c) => c * (60000 / BUCKET_MS));
  const max = Math.max(6, ...rates);

  const css = getComputedStyle(canvas);
  const bar = css.getPropertyValue("--chart-bar").trim() || "#4ade80";
  const grid = css.getPropertyValue("--chart-grid").trim() || "#334155";
  const label = css.getPropertyValue("--chart-label").trim() || "#94a3b8";

  const top = 12;
  const bottom = cssH - 2;
  const h = bottom - top;
  ctx.strokeStyle = grid;
  ctx.lineWidth = 1;
  ctx.setLineDash([2, 3]);
  for (const f of [0.5, 1]) {
    const y = Math.round(bottom - h * f) + 0.5;
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(cssW, y);
    ctx.stroke();
  }
  ctx.setLineDash([]);

  const slot = cssW / BUCKETS;
  const w = Math.max(1, slot - 2);
  ctx.fillStyle = bar;
  rates.forEach((r, i) => {
    if (!r) return;
    const bh = Math.max(2, (r / max) * h);
    ctx.globalAlpha = i === BUCKETS - 1 ? 0.55 : 1; // the current bucket is still filling
    ctx.fillRect(i * slot + 1, bottom - bh, w, bh);
  });
  ctx.globalAlpha = 1;

  ctx.fillStyle = label;
  ctx.font = "10px ui-monospace, SFMono-Regular, Menlo, monospace";
  // Alignment is context state and outlives a redraw: set both every time, or the next
  // left-hand label is drawn right-aligned at x=2, off the canvas.
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  // y=1: glyphs rise a little above the em box, so at y=0 their tops were cut off.
  ctx.fillText(`${max}/min`, 2, 1);
  ctx.textAlign = "right";
  ctx.fillText(`${(BUCKETS * BUCKET_MS) / 60000} min`, cssW - 2, 1);
}
