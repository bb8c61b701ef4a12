// The fleet on a canvas: district borders, rivers, streets, and one dot per lamp coloured by its condition;
// district names at every zoom, street names once zoomed in. 110,000 lamps are drawn by writing pixels into an
// ImageData (a few milliseconds); streets are one path per road class.
import { I18N } from "./i18n.js";

const M_PER_UNIT = 111320; // plane units are degrees of latitude; a metre is 1/111,320 of one
// Road classes, widest first: the street's width on the ground (m), its thinnest line (px) and its colour.
const ROAD_STYLE = {
  expressway: { m: 32, min: 1.8, color: "rgba(217, 119, 6, 0.9)" },
  arterial: { m: 24, min: 1.3, color: "rgb(148, 163, 184)" },
  secondary: { m: 14, min: 0.9, color: "rgb(100, 116, 139)" },
  branch: { m: 8, min: 0.6, color: "rgb(71, 85, 105)" },
};
const ROAD_ORDER = ["branch", "secondary", "arterial", "expressway"]; // drawn in this order, main roads on top
const RIVER_COLOR = "rgba(37, 99, 235, 0.85)";
const ROAD_LABELS_FROM = 0.12; // px per metre: street names show from this zoom (1 km ≈ 120 px)
const BRANCH_LABELS_FROM = 0.3;

export const CONDITION_COLORS = {
  off: [100, 116, 139],
  lit: [250, 204, 21],
  dark: [239, 68, 68],
  unknown: [168, 85, 247],
  day_burning: [249, 115, 22],
  excluded: [51, 65, 85],
  in_ticket: [34, 211, 238],
};
const ALARMS = new Set(["dark", "day_burning", "in_ticket", "unknown"]); // drawn last, on top

export function decode(b64, Type) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return new Type(bytes.buffer);
}

const GRID = 128; // lamps are indexed in GRID × GRID cells of the city's box, to draw only the visible ones

export class LampMap {
  constructor(canvas, layout, onPick) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.layout = layout;
    this.onPick = onPick;
    this.n = layout.lamps;
    if (layout.ids) {
      this.ids = layout.ids;
    } else {
      const c = layout.id_columns;
      this.ids = null;
      this.idPrefixes = c.prefixes.map((p, k) => [p, c.widths[k]]);
      this.idPrefix = decode(c.prefix, Int16Array);
      this.idSerial = decode(c.serial, Int32Array);
    }
    this._slotOf = null; // id → slot, built on first use (a million entries take a while)
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
    const project = (path) => {
      const out = new Float64Array(path.length * 2);
      path.forEach(([lo, la], j) => { out[2 * j] = lo * this.k; out[2 * j + 1] = -la; });
      return out;
    };
    this.outlines = layout.districts.map((d) => ({
      ...d,
      pts: d.outline.map(([lo, la]) => [lo * this.k, -la]),
      at: [d.centre[0] * this.k, -d.centre[1]],
    }));
    // Streets from their paths, by class; an inventory without paths gets lines through its lamps instead.
    this.streets = Object.fromEntries(ROAD_ORDER.map((c) => [c, []]));
    for (const r of layout.roads) {
      if (r.path && r.path.length >= 2 && this.streets[r.class]) {
        this.streets[r.class].push({ id: r.id, name_zh: r.name_zh, name_en: r.name_en, xy: project(r.path) });
      }
    }
    this.hasStreets = ROAD_ORDER.some((c) => this.streets[c].length);
    this.rivers = (layout.waterways || []).map((w) => ({ ...w, xy: project(w.path) }));
    this.labelWidth = new Map(); // text → width at the label font, measured once
    this._index();
    this.codes = layout.conditions;
    this.palette = this.codes.map((c) => CONDITION_COLORS[c] || [255, 255, 255]);
    this.alarm = this.codes.map((c) => ALARMS.has(c));
    this.state = new Uint8Array(this.n).fill(this.codes.indexOf("unknown"));
    this.alarms = this._alarmsOf(this.state);
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

  // The lamp id of a slot.
  idOf(i) {
    if (this.ids) return this.ids[i];
    const [prefix, width] = this.idPrefixes[this.idPrefix[i]];
    return prefix + String(this.idSerial[i]).padStart(width, "0");
  }

  get slotOf() {
    if (!this._slotOf) {
      this._slotOf = new Map();
      for (let i = 0; i < this.n; i++) this._slotOf.set(this.idOf(i), i);
    }
    return this._slotOf;
  }

  setState(bytes) {
    if (bytes.length === this.n) {
      this.state = bytes;
      this.alarms = this._alarmsOf(bytes);
    }
    this.request();
  }

  // The slots of lamps in an alarm condition: drawn after the others, so that they stay visible.
  _alarmsOf(state) {
    let k = 0;
    const out = new Uint32Array(this.n);
    for (let i = 0; i < this.n; i++) if (this.alarm[state[i]]) out[k++] = i;
    return out.subarray(0, k);
  }

  // Lamps by grid cell: `cellStart[c]`..`cellStart[c + 1]` index `cellOrder`, the slots of cell c's lamps.
  _index() {
    const [x0, y0, x1, y1] = this.bounds;
    this.gx = x0;
    this.gy = y0;
    this.gw = Math.max(x1 - x0, 1e-9) / GRID;
    this.gh = Math.max(y1 - y0, 1e-9) / GRID;
    const cell = new Uint32Array(this.n);
    const start = new Uint32Array(GRID * GRID + 1);
    for (let i = 0; i < this.n; i++) {
      const cx = Math.min(GRID - 1, Math.max(0, Math.floor((this.x[i] - x0) / this.gw)));
      const cy = Math.min(GRID - 1, Math.max(0, Math.floor((this.y[i] - y0) / this.gh)));
      cell[i] = cy * GRID + cx;
      start[cell[i] + 1]++;
    }
    for (let c = 0; c < GRID * GRID; c++) start[c + 1] += start[c];
    const cursor = start.slice(0, GRID * GRID);
    const order = new Uint32Array(this.n);
    for (let i = 0; i < this.n; i++) order[cursor[cell[i]]++] = i;
    this.cellStart = start;
    this.cellOrder = order;
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

  // CSS pixel position of a longitude and latitude (for tests).
  screenOfLonLat(lon, lat) {
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    return [(lon * this.k - this.cx) * this.scale + w / 2, (-lat - this.cy) * this.scale + h / 2];
  }

  // Zoom to `scale` (CSS px per degree of latitude) around a longitude and latitude.
  view(lon, lat, scale) {
    this.cx = lon * this.k;
    this.cy = -lat;
    this.scale = scale;
    this.request();
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

    // District borders.
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

    const ppm = s / M_PER_UNIT / r; // CSS px per metre
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (this.rivers.length) {
      ctx.strokeStyle = RIVER_COLOR;
      ctx.lineWidth = Math.max(2, 60 * ppm) * r;
      ctx.beginPath();
      for (const w of this.rivers) this._trace(w.xy, s, ox, oy);
      ctx.stroke();
    }
    let roads = 0;
    if (this.hasStreets) {
      for (const cls of ROAD_ORDER) {
        const st = ROAD_STYLE[cls];
        ctx.strokeStyle = st.color;
        ctx.lineWidth = Math.max(st.min, st.m * ppm) * r;
        ctx.beginPath();
        for (const road of this.streets[cls]) roads += this._trace(road.xy, s, ox, oy);
        ctx.stroke();
      }
    } else {
      this._roadsThroughLamps(s, ox, oy);
    }

    // Lamps: pixels into an ImageData; alarms in a second pass so they stay visible.
    const lctx = this.layer.getContext("2d");
    const img = lctx.createImageData(W, H);
    const buf = new Uint32Array(img.data.buffer);
    const colors = this.palette.map(([R, G, B]) => (255 << 24) | (B << 16) | (G << 8) | R);
    const dot = Math.max(2, Math.min(6, Math.round(s * 0.00012))) ;
    const half = dot >> 1;
    let drawn = 0;
    const state = this.state, alarm = this.alarm, xs = this.x, ys = this.y;
    const plot = (i) => {
      const px = (xs[i] * s + ox) | 0, py = (ys[i] * s + oy) | 0;
      if (px < 0 || py < 0 || px >= W || py >= H) return;
      drawn++;
      const color = colors[state[i]];
      const x0 = Math.max(0, px - half), x1 = Math.min(W, px - half + dot);
      const y0 = Math.max(0, py - half), y1 = Math.min(H, py - half + dot);
      for (let y = y0; y < y1; y++) {
        const row = y * W;
        for (let x = x0; x < x1; x++) buf[row + x] = color;
      }
    };
    // The grid cells in view (a dot's width of margin); all of them at city scale.
    const m = dot / s;
    const c0 = Math.max(0, Math.floor((-ox / s - m - this.gx) / this.gw));
    const c1 = Math.min(GRID - 1, Math.floor(((W - ox) / s + m - this.gx) / this.gw));
    const r0 = Math.max(0, Math.floor((-oy / s - m - this.gy) / this.gh));
    const r1 = Math.min(GRID - 1, Math.floor(((H - oy) / s + m - this.gy) / this.gh));
    if (c0 === 0 && r0 === 0 && c1 === GRID - 1 && r1 === GRID - 1) {
      for (let i = 0; i < this.n; i++) if (!alarm[state[i]]) plot(i);
    } else {
      const order = this.cellOrder, start = this.cellStart;
      for (let r = r0; r <= r1; r++) {
        for (let k = start[r * GRID + c0], end = start[r * GRID + c1 + 1]; k < end; k++) {
          const i = order[k];
          if (!alarm[state[i]]) plot(i);
        }
      }
    }
    for (let k = 0; k < this.alarms.length; k++) plot(this.alarms[k]);
    lctx.putImageData(img, 0, 0);
    ctx.drawImage(this.layer, 0, 0);

    // Names over everything: streets once zoomed in, then districts.
    const roadLabels = ppm >= ROAD_LABELS_FROM ? this._streetNames(s, ox, oy, ppm) : 0;
    let districtLabels = 0;
    const placed = []; // [x, y, half width] of the names drawn
    ctx.font = `600 ${14 * r}px system-ui, "Noto Sans CJK SC", sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.lineWidth = 3 * r;
    ctx.strokeStyle = "rgba(11, 18, 32, 0.85)";
    ctx.fillStyle = "rgba(226, 232, 240, 0.95)";
    for (const d of this.outlines) {
      if (!d.pts.length) continue;
      const px = d.at[0] * s + ox;
      let py = d.at[1] * s + oy;
      if (px < 0 || py < 0 || px > W || py > H) continue;
      const name = I18N.lang === "zh" ? d.name_zh : d.name_en;
      // Neighbouring centres are close at city scale: a name that would cover another moves up or down a line.
      const w = ctx.measureText(name).width / 2 + 4 * r, h = 9 * r;
      const free = (y) => !placed.some(([x0, y0, w0]) => Math.abs(x0 - px) < w + w0 && Math.abs(y0 - y) < 2 * h);
      for (const dy of [0, 2 * h, -2 * h, 4 * h, -4 * h]) {
        if (free(py + dy)) { py += dy; break; }
      }
      placed.push([px, py, w]);
      ctx.strokeText(name, px, py);
      ctx.fillText(name, px, py);
      districtLabels++;
    }
    if (this.selected >= 0) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2 * r;
      ctx.beginPath();
      ctx.arc(this.x[this.selected] * s + ox, this.y[this.selected] * s + oy, 9 * r, 0, 2 * Math.PI);
      ctx.stroke();
    }
    this.lastDraw = { lamps: drawn, roads, roadLabels, districtLabels, ms: performance.now() - t0 };
    this.canvas.dispatchEvent(new CustomEvent("drawn", { detail: this.lastDraw }));
  }

  // Adds a polyline (plane coordinates) to the current path, skipping vertices closer than 2 px; 1 if drawn.
  _trace(xy, s, ox, oy) {
    const r = this.ratio, W = this.canvas.width, H = this.canvas.height;
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (let j = 0; j < xy.length; j += 2) {
      const px = xy[j] * s + ox, py = xy[j + 1] * s + oy;
      if (px < minX) minX = px;
      if (px > maxX) maxX = px;
      if (py < minY) minY = py;
      if (py > maxY) maxY = py;
    }
    if (maxX < 0 || maxY < 0 || minX > W || minY > H) return 0;
    const min2 = 4 * r * r;
    let lx = xy[0] * s + ox, ly = xy[1] * s + oy;
    this.ctx.moveTo(lx, ly);
    const last = xy.length - 2;
    for (let j = 2; j < xy.length; j += 2) {
      const px = xy[j] * s + ox, py = xy[j + 1] * s + oy;
      if (j === last || (px - lx) * (px - lx) + (py - ly) * (py - ly) >= min2) {
        this.ctx.lineTo(px, py);
        lx = px; ly = py;
      }
    }
    return 1;
  }

  // An inventory loaded without street paths: consecutive lamps of one road joined.
  _roadsThroughLamps(s, ox, oy) {
    const ctx = this.ctx, r = this.ratio;
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
  }

  // Street names along their longest visible stretch, main roads first, none overlapping another; the count.
  _streetNames(s, ox, oy, ppm) {
    const ctx = this.ctx, r = this.ratio, W = this.canvas.width, H = this.canvas.height;
    const size = 11 * r;
    ctx.font = `${size}px system-ui, "Noto Sans CJK SC", sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.lineWidth = 3 * r;
    ctx.strokeStyle = "rgba(11, 18, 32, 0.9)";
    ctx.fillStyle = "rgba(203, 213, 225, 0.95)";
    const cell = 16 * r, cols = Math.ceil(W / cell) + 1;
    const taken = new Uint8Array(cols * (Math.ceil(H / cell) + 1));
    const zh = I18N.lang === "zh";
    let placed = 0;
    for (const cls of ["expressway", "arterial", "secondary", "branch"]) {
      if (cls === "branch" && ppm < BRANCH_LABELS_FROM) break;
      for (const road of this.streets[cls]) {
        if (placed >= 400) return placed;
        const name = zh ? road.name_zh : road.name_en;
        if (!name) continue;
        const key = `${size}|${name}`;
        let width = this.labelWidth.get(key);
        if (width === undefined) {
          width = ctx.measureText(name).width;
          this.labelWidth.set(key, width);
        }
        const seg = this._longestVisible(road.xy, s, ox, oy, W, H);
        if (!seg || seg.len < width + 24 * r) continue;
        let angle = Math.atan2(seg.dy, seg.dx);
        if (angle > Math.PI / 2) angle -= Math.PI;
        if (angle < -Math.PI / 2) angle += Math.PI;
        const cos = Math.cos(angle), sin = Math.sin(angle);
        const cells = [];
        for (let t = -width / 2 - 4 * r; t <= width / 2 + 4 * r; t += cell / 2) {
          const cx = Math.floor((seg.mx + t * cos) / cell), cy = Math.floor((seg.my + t * sin) / cell);
          if (cx >= 0 && cy >= 0 && cx < cols) cells.push(cy * cols + cx);
        }
        if (cells.some((c) => taken[c])) continue;
        for (const c of cells) taken[c] = 1;
        ctx.save();
        ctx.translate(seg.mx, seg.my);
        ctx.rotate(angle);
        ctx.strokeText(name, 0, 0);
        ctx.fillText(name, 0, 0);
        ctx.restore();
        placed++;
      }
    }
    return placed;
  }

  // The longest chord of a polyline inside the canvas, clipped to it: its middle, direction and length. A curved
  // road's chords span five vertices (500 m), along which it bends little.
  _longestVisible(xy, s, ox, oy, W, H) {
    let best = null;
    const step = 2 * Math.max(1, Math.min(5, xy.length / 2 - 1));
    for (let j = 0; j + step < xy.length; j += 2) {
      let x0 = xy[j] * s + ox, y0 = xy[j + 1] * s + oy;
      let x1 = xy[j + step] * s + ox, y1 = xy[j + step + 1] * s + oy;
      // Liang–Barsky clipping to the canvas.
      const dx = x1 - x0, dy = y1 - y0;
      let t0 = 0, t1 = 1, ok = true;
      for (const [p, q] of [[-dx, x0], [dx, W - x0], [-dy, y0], [dy, H - y0]]) {
        if (p === 0) { if (q < 0) { ok = false; break; } continue; }
        const t = q / p;
        if (p < 0) { if (t > t1) { ok = false; break; } if (t > t0) t0 = t; }
        else { if (t < t0) { ok = false; break; } if (t < t1) t1 = t; }
      }
      if (!ok) continue;
      const len = Math.hypot(dx, dy) * (t1 - t0);
      if (!best || len > best.len) {
        x1 = x0 + dx * t1; y1 = y0 + dy * t1;
        x0 += dx * t0; y0 += dy * t0;
        best = { len, dx, dy, mx: (x0 + x1) / 2, my: (y0 + y1) / 2 };
      }
    }
    return best;
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
          this.onPick(this.idOf(i));
        }
      }
      drag = null;
    });
    new ResizeObserver(() => this.resize()).observe(c);
  }
}
