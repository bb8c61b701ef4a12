// The fleet on a canvas: district outlines, roads, and one dot per lamp coloured by its condition.
// 110,000 lamps are drawn by writing pixels into an ImageData (a few milliseconds), roads as one decimated path.
"use strict";

const CONDITION_COLORS = {
  off: [100, 116, 139],
  lit: [250, 204, 21],
  dark: [239, 68, 68],
  unknown: [168, 85, 247],
  day_burning: [249, 115, 22],
  excluded: [51, 65, 85],
  in_ticket: [34, 211, 238],
};
const ALARMS = new Set(["dark", "day_burning", "in_ticket", "unknown"]); // drawn last, on top

function decode(b64, Type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Type(bytes.buffer);
}

class LampMap {
  constructor(canvas, layout, onPick) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.layout = layout;
    this.onPick = onPick;
    this.n = layout.lamps;
    this.ids = layout.ids;
    this.slotOf = new Map(layout.ids.map((id, i) => [id, i]));
    const lon = decode(layout.lon, Float32Array);
    const lat = decode(layout.lat, Float32Array);
    this.road = decode(layout.road, Int32Array);
    this.district = decode(layout.district, Int16Array);
    const [minLon, minLat, maxLon, maxLat] = layout.bbox.length ? layout.bbox : [0, 0, 1, 1];
    this.lat0 = (minLat + maxLat) / 2;
    this.k = Math.cos((this.lat0 * Math.PI) / 180);
    this.x = new Float32Array(this.n);
    this.y = new Float32Array(this.n);
    for (let i = 0; i < this.n; i++) {
      this.x[i] = lon[i] * this.k;
      this.y[i] = -lat[i];
    }
    this.bounds = [minLon * this.k, -maxLat, maxLon * this.k, -minLat];
    this.outlines = layout.districts.map((d) => ({
      ...d,
      pts: d.outline.map(([lo, la]) => [lo * this.k, -la]),
    }));
    this.codes = layout.conditions;
    this.palette = this.codes.map((c) => CONDITION_COLORS[c] || [255, 255, 255]);
    this.alarm = this.codes.map((c) => ALARMS.has(c));
    this.state = new Uint8Array(this.n).fill(this.codes.indexOf("unknown"));
    this.selected = -1;
    this.lastDraw = { lamps: 0, ms: 0 };
    this.layer = document.createElement("canvas");
    this._dirty = false;
    this._wire();
    this.resize();
    this.reset();
  }

  reset() {
    const [x0, y0, x1, y1] = this.bounds;
    const w = this.canvas.clientWidth || 800;
    const h = this.canvas.clientHeight || 500;
    this.cx = (x0 + x1) / 2;
    this.cy = (y0 + y1) / 2;
    this.scale = 0.92 * Math.min(w / Math.max(x1 - x0, 1e-6), h / Math.max(y1 - y0, 1e-6));
    this.request();
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth || 800;
    const h = this.canvas.clientHeight || 500;
    this.canvas.width = Math.round(w * ratio);
    this.canvas.height = Math.round(h * ratio);
    this.layer.width = this.canvas.width;
    this.layer.height = this.canvas.height;
    this.ratio = ratio;
    this.request();
  }

  setState(bytes) {
    if (bytes.length === this.n) this.state = bytes;
    this.request();
  }

  counts() {
    const out = Object.fromEntries(this.codes.map((c) => [c, 0]));
    for (let i = 0; i < this.n; i++) out[this.codes[this.state[i]]]++;
    return out;
  }

  conditionOf(id) {
    const i = this.slotOf.get(id);
    return i === undefined ? null : this.codes[this.state[i]];
  }

  // CSS pixel position of a lamp on the canvas (for tests and for the inspector's marker).
  screenOf(id) {
    const i = this.slotOf.get(id);
    if (i === undefined) return null;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    return [(this.x[i] - this.cx) * this.scale + w / 2, (this.y[i] - this.cy) * this.scale + h / 2];
  }

  // The colour drawn at a CSS pixel position, [r, g, b].
  pixelAt(x, y) {
    const d = this.ctx.getImageData(Math.round(x * this.ratio), Math.round(y * this.ratio), 1, 1).data;
    return [d[0], d[1], d[2]];
  }

  focus(id, scale) {
    const i = this.slotOf.get(id);
    if (i === undefined) return;
    this.cx = this.x[i];
    this.cy = this.y[i];
    if (scale) this.scale = Math.max(this.scale, scale);
    this.selected = i;
    this.request();
  }

  request() {
    if (this._dirty) return;
    this._dirty = true;
    requestAnimationFrame(() => {
      this._dirty = false;
      this.draw();
    });
  }

  draw() {
    const t0 = performance.now();
    const ctx = this.ctx;
    const r = this.ratio;
    const W = this.canvas.width, H = this.canvas.height;
    const s = this.scale * r;
    const ox = W / 2 - this.cx * s, oy = H / 2 - this.cy * s;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0b1220";
    ctx.fillRect(0, 0, W, H);

    // District outlines and names.
    ctx.lineWidth = 1.2 * r;
    ctx.strokeStyle = "rgba(148, 163, 184, 0.55)";
    ctx.fillStyle = "rgba(30, 41, 59, 0.55)";
    for (const d of this.outlines) {
      if (d.pts.length < 3) continue;
      ctx.beginPath();
      d.pts.forEach(([x, y], j) => (j ? ctx.lineTo(x * s + ox, y * s + oy) : ctx.moveTo(x * s + ox, y * s + oy)));
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
    }

    // Roads: consecutive lamps of one road, skipping vertices closer than 2 px.
    ctx.beginPath();
    ctx.strokeStyle = "rgba(71, 85, 105, 0.9)";
    ctx.lineWidth = Math.max(1, Math.min(3, s * 0.0004)) * r;
    let lastRoad = -1, lx = 0, ly = 0;
    const min2 = 4 * r * r;
    for (let i = 0; i < this.n; i++) {
      const px = this.x[i] * s + ox, py = this.y[i] * s + oy;
      if (this.road[i] !== lastRoad) {
        ctx.moveTo(px, py);
        lastRoad = this.road[i];
        lx = px; ly = py;
      } else if ((px - lx) * (px - lx) + (py - ly) * (py - ly) >= min2) {
        ctx.lineTo(px, py);
        lx = px; ly = py;
      }
    }
    ctx.stroke();

    // Lamps: pixels into an ImageData; alarms in a second pass so they stay visible.
    const lctx = this.layer.getContext("2d");
    const img = lctx.createImageData(W, H);
    const buf = new Uint32Array(img.data.buffer);
    const colors = this.palette.map(([R, G, B]) => (255 << 24) | (B << 16) | (G << 8) | R);
    const dot = Math.max(2, Math.min(6, Math.round(s * 0.00012))) ;
    const half = dot >> 1;
    let drawn = 0;
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < this.n; i++) {
        const c = this.state[i];
        if (this.alarm[c] !== (pass === 1)) continue;
        const px = (this.x[i] * s + ox) | 0, py = (this.y[i] * s + oy) | 0;
        if (px < 0 || py < 0 || px >= W || py >= H) continue;
        drawn++;
        const color = colors[c];
        const x0 = Math.max(0, px - half), x1 = Math.min(W, px - half + dot);
        const y0 = Math.max(0, py - half), y1 = Math.min(H, py - half + dot);
        for (let y = y0; y < y1; y++) {
          const row = y * W;
          for (let x = x0; x < x1; x++) buf[row + x] = color;
        }
      }
    }
    lctx.putImageData(img, 0, 0);
    ctx.drawImage(this.layer, 0, 0);

    // Names over everything.
    ctx.font = `${12 * r}px system-ui, "Noto Sans CJK SC", sans-serif`;
    ctx.fillStyle = "rgba(226, 232, 240, 0.9)";
    ctx.textAlign = "center";
    for (const d of this.outlines) {
      if (!d.pts.length) continue;
      const cx = d.pts.reduce((a, p) => a + p[0], 0) / d.pts.length;
      const cy = d.pts.reduce((a, p) => a + p[1], 0) / d.pts.length;
      ctx.fillText(I18N.lang === "zh" ? d.name_zh : d.name_en, cx * s + ox, cy * s + oy);
    }
    if (this.selected >= 0) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2 * r;
      ctx.beginPath();
      ctx.arc(this.x[this.selected] * s + ox, this.y[this.selected] * s + oy, 9 * r, 0, 2 * Math.PI);
      ctx.stroke();
    }
    this.lastDraw = { lamps: drawn, ms: performance.now() - t0 };
    this.canvas.dispatchEvent(new CustomEvent("drawn", { detail: this.lastDraw }));
  }

  pick(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    const mx = clientX - rect.left, my = clientY - rect.top;
    const w = rect.width, h = rect.height;
    let best = -1, bestD = 10 * 10;
    for (let i = 0; i < this.n; i++) {
      const dx = (this.x[i] - this.cx) * this.scale + w / 2 - mx;
      const dy = (this.y[i] - this.cy) * this.scale + h / 2 - my;
      const d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  _wire() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const rect = c.getBoundingClientRect();
      const mx = e.clientX - rect.left - rect.width / 2, my = e.clientY - rect.top - rect.height / 2;
      const wx = this.cx + mx / this.scale, wy = this.cy + my / this.scale;
      this.scale *= Math.exp(-e.deltaY * 0.0015);
      this.cx = wx - mx / this.scale;
      this.cy = wy - my / this.scale;
      this.request();
    }, { passive: false });
    c.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, cx: this.cx, cy: this.cy, moved: false };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      this.cx = drag.cx - dx / this.scale;
      this.cy = drag.cy - dy / this.scale;
      if (drag.moved) this.request();
    });
    c.addEventListener("pointerup", (e) => {
      if (drag && !drag.moved) {
        const i = this.pick(e.clientX, e.clientY);
        if (i >= 0) {
          this.selected = i;
          this.request();
          this.onPick(this.ids[i]);
        }
      }
      drag = null;
    });
    new ResizeObserver(() => this.resize()).observe(c);
  }
}
