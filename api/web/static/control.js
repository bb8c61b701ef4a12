// The control room: KPI tiles, the map, rate tables, trend charts, the ticket queue, the command panel and the
// lamp inspector. Live through two server-sent event streams (overview figures, ticket events).
/* global uPlot */
import { App } from "./common.js";
import { I18N } from "./i18n.js";
import { CONDITION_COLORS, LampMap } from "./map.js";

const Control = {
  layout: null,
  map: null,
  districtNames: {},
  charts: {},
  lastOverview: null,
  campaign: null,
  ticketsTimer: null,

  async start() {
    // The map's two fetches go out with the sign-in check, not after it: the first full map is what an
    // operator waits for (a 401 on any of them sends the page to the login form).
    const layout = App.api("/api/v1/map/layout");
    const state = App.api("/api/v1/map/state", { raw: true });
    layout.catch(() => {});
    state.catch(() => {}); // awaited below; a failure surfaces there
    await App.start();
    window.lamplighter = this; // for the browser tests and for curious operators' consoles
    this.layout = await layout;
    const laidOut = performance.now();
    for (const d of this.layout.districts) this.districtNames[d.code] = d;
    this.map = new LampMap(document.getElementById("map"), this.layout, (id) => this.inspect(id));
    const built = performance.now();
    await this.refreshState(state);
    // When the layout had arrived and been parsed, when the map was built, when it was first drawn in full.
    this.firstFullDraw = { lamps: this.map.lastDraw.lamps, at_ms: performance.now(), layout_ms: laidOut, map_ms: built };
    document.getElementById("map-reset").addEventListener("click", () => this.map.reset());
    document.getElementById("lamp-close").addEventListener("click", () => {
      document.getElementById("lamp-panel").hidden = true;
      this.map.selected = -1;
      this.map.request();
    });
    this.map.canvas.addEventListener("drawn", (e) => this.showDrawn(e.detail));
    this.setupCommands();
    this.setupTicketFilters();
    document.addEventListener("languagechange", () => this.rerender());
    await Promise.all([this.refreshTables(), this.refreshTickets(), this.refreshTrends(), this.refreshCommands(), this.refreshEnergy()]);
    this.legend();
    App.stream("/api/v1/overview/stream?every_s=2", { overview: (o) => this.onOverview(o) }, (ok) => this.live(ok));
    App.stream("/api/v1/tickets/events", { ticket: () => this.onTicketEvent() }, (ok) => this.live(ok));
    setInterval(() => this.refreshTables(), 15000);
    setInterval(() => this.refreshTrends(), 300000);
    setInterval(() => this.refreshEnergy(), 300000);
  },

  live(ok) {
    const el = document.getElementById("live");
    el.className = `live ${ok ? "on" : "off"}`;
    el.dataset.i18n = ok ? "live.connected" : "live.lost";
    el.textContent = I18N.t(el.dataset.i18n);
  },

  rerender() {
    this.map.request();
    this.legend();
    if (this.lastOverview) this.onOverview(this.lastOverview);
    this.refreshTables();
    this.refreshTickets();
    this.refreshTrends();
    this.refreshEnergy();
    this.refreshCommands();
    this.fillTargetValues();
    const open = document.getElementById("lamp-panel");
    if (!open.hidden && this.inspected) this.inspect(this.inspected);
  },

  async refreshState(pending) {
    const r = await (pending || App.api("/api/v1/map/state", { raw: true }));
    this.map.setState(new Uint8Array(await r.arrayBuffer()));
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    this.legend();
  },

  showDrawn(d) {
    document.getElementById("map-info").textContent = I18N.t("map.drawn", {
      n: I18N.number(d.lamps), ms: I18N.number(d.ms, 1),
    });
  },

  legend() {
    if (!this.map) return;
    const counts = this.map.counts();
    const box = document.getElementById("legend");
    box.replaceChildren(
      ...this.layout.conditions.filter((c) => c !== "excluded").map((c) => {
        const [r, g, b] = CONDITION_COLORS[c];
        return App.el("span", { class: "key", dataset: { condition: c } },
          App.el("i", { style: `background: rgb(${r},${g},${b})` }),
          `${I18N.t("cond." + c)} ${I18N.number(counts[c])}`);
      }),
    );
  },

  // -- live figures --------------------------------------------------------------------------------------

  onOverview(o) {
    const previous = this.lastOverview;
    this.lastOverview = o;
    const c = o.city;
    const set = (id, value, note) => {
      const tile = document.getElementById(id);
      tile.querySelector(".value").textContent = value;
      if (note !== undefined) tile.querySelector(".note").textContent = note;
      return tile;
    };
    const rate = set("kpi-rate", c.rate === null ? "—" : `${I18N.number(c.rate, 2)} %`,
      c.rate === null ? I18N.t("kpi.nothing_due") : I18N.t("kpi.target", { target: I18N.number(c.target, 0) }));
    rate.classList.toggle("good", c.meets_target === true);
    rate.classList.toggle("bad", c.meets_target === false);
    set("kpi-due", I18N.number(c.due));
    set("kpi-lit", I18N.number(c.lit));
    set("kpi-dark", I18N.number(c.dark));
    set("kpi-unknown", I18N.number(c.unknown));
    const integ = o.integrity.rate;
    set("kpi-integrity", integ === null ? "—" : `${I18N.number(integ, 2)} %`,
      I18N.t("kpi.target", { target: I18N.number(o.integrity.target, 0) }));
    const p = o.tickets.by_priority;
    set("kpi-tickets", I18N.number(o.tickets.open),
      `P1 ${p.P1} · P2 ${p.P2} · P3 ${p.P3} · P4 ${p.P4} — ${I18N.t("kpi.overdue", { n: o.tickets.overdue })}`);
    set("kpi-energy", `${I18N.number(o.energy.kwh, 1)} kWh`,
      I18N.t("kpi.energy_note", { n: o.energy.cabinet_meters, since: I18N.time(o.energy.since) }));
    set("kpi-power", `${I18N.number(o.power_kw, 1)} kW`);
    // A new instant: fetch the lamps' bytes (110 kB) and redraw.
    if (!previous || previous.ts !== o.ts) this.refreshState().catch(() => {});
  },

  onTicketEvent() {
    // Several events arrive together in a storm: refresh once they settle.
    clearTimeout(this.ticketsTimer);
    this.ticketsTimer = setTimeout(() => {
      this.refreshTickets();
      this.refreshState().catch(() => {});
    }, 300);
  },

  // -- tables --------------------------------------------------------------------------------------------

  rateCell(r) {
    if (r.rate === null) return App.el("td", {}, "—");
    return App.el("td", { class: r.meets_target ? "good" : "bad" }, `${I18N.number(r.rate, 2)} %`);
  },

  districtName(code) {
    const d = this.districtNames[code];
    return d ? (I18N.lang === "zh" ? d.name_zh : d.name_en) : code;
  },

  async refreshTables() {
    const [districts, classes] = await Promise.all([
      App.api("/api/v1/lighting-rate?group_by=district"),
      App.api("/api/v1/lighting-rate?group_by=road_class"),
    ]);
    const rows = (groups, name) => groups.map((r) => App.el("tr", {},
      App.el("td", {}, name(r.key)), this.rateCell(r), App.el("td", {}, `${I18N.number(r.target, 0)} %`),
      App.el("td", {}, I18N.number(r.due)), App.el("td", {}, I18N.number(r.lit)),
      App.el("td", {}, I18N.number(r.dark)), App.el("td", {}, I18N.number(r.unknown))));
    document.querySelector("#districts tbody").replaceChildren(...rows(districts.groups, (k) => this.districtName(k)));
    document.querySelector("#road-classes tbody").replaceChildren(...rows(classes.groups, (k) => I18N.t("class." + k)));
  },

  // -- trends --------------------------------------------------------------------------------------------

  chart(id, data, series, opts = {}) {
    const box = document.getElementById(id);
    this.charts[id]?.destroy();
    delete this.charts[id];
    if (typeof uPlot === "undefined") {
      box.textContent = "uPlot missing: run scripts/build-web";
      return;
    }
    if (!data[0].length) {
      box.replaceChildren(App.el("p", { class: "hint" }, I18N.t("trend.empty")));
      return;
    }
    box.replaceChildren();
    const width = Math.max(280, box.clientWidth || 480);
    const tz = I18N.timezone;
    this.charts[id] = new uPlot({
      width, height: opts.height || 180, tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), tz),
      // Times in the one format of the page's language (I18N), on the axis and in the legend alike.
      series: [
        {
          label: I18N.t(opts.days ? "chart.night" : "chart.time"),
          value: (u, ts) => (ts === null ? "—" : opts.days ? this.day(ts) : I18N.dateTime(ts * 1e3)),
        },
        ...series,
      ],
      scales: { x: opts.x ? { time: true, range: opts.x } : { time: true }, y: { range: opts.range || [80, 100] } },
      axes: [
        opts.days
          ? { stroke: "#94a3b8", grid: { stroke: "#1e293b" }, incrs: [86400, 2 * 86400, 7 * 86400], values: (u, splits) => splits.map((ts) => this.day(ts)) }
          : { stroke: "#94a3b8", grid: { stroke: "#1e293b" }, values: (u, splits) => splits.map((ts) => I18N.time(ts * 1e3)) },
        { stroke: "#94a3b8", grid: { stroke: "#1e293b" } },
      ],
      legend: { show: true },
    }, data, box);
  },

  async refreshTrends() {
    const [day, nights] = await Promise.all([
      App.api("/api/v1/lighting-rate/history?group_by=city&bucket=10m"),
      App.api("/api/v1/reports/nights?limit=30"),
    ]);
    // Daytime has no rate: a gap longer than two buckets breaks the line rather than joining dusk to dusk.
    const xs = [], rates = [];
    for (const p of day.points.filter((q) => q.rate !== null)) {
      const t = Date.parse(p.ts) / 1000;
      if (xs.length && t - xs[xs.length - 1] > 2 * 600) { xs.push(xs[xs.length - 1] + 600); rates.push(null); }
      xs.push(t);
      rates.push(p.rate);
    }
    this.chart("trend-day", [xs, rates, xs.map(() => 98)], [
      { label: I18N.t("trend.rate"), stroke: "#facc15", width: 2, points: { show: xs.length < 3 } },
      { label: I18N.t("trend.target"), stroke: "#ef4444", dash: [6, 4] },
    ], { x: [Date.parse(day.from) / 1000, Date.parse(day.to) / 1000] });
    const items = nights.items.filter((n) => n.city).reverse();
    const nx = items.map((n) => Date.parse(n.night + "T12:00:00Z") / 1000);
    this.chart("trend-nights", [nx, items.map((n) => n.city.mean), items.map((n) => n.city.min), items.map(() => 98)], [
      { label: I18N.t("trend.mean"), stroke: "#facc15", width: 2 },
      { label: I18N.t("trend.min"), stroke: "#38bdf8" },
      { label: I18N.t("trend.target"), stroke: "#ef4444", dash: [6, 4] },
    ], { days: true });
  },

  // -- energy ---------------------------------------------------------------------------------------------

  async refreshEnergy() {
    const e = await App.api("/api/v1/energy?group_by=city&period=night");
    this.energy = e;
    const items = e.items.slice().sort((a, b) => (a.period < b.period ? -1 : 1));
    const xs = items.map((i) => Date.parse(i.period + "T12:00:00Z") / 1000);
    const top = Math.max(1, ...items.map((i) => i.full_power_kwh)) * 1.1;
    this.chart("energy-chart", [xs, items.map((i) => i.energy_kwh), items.map((i) => i.full_power_kwh)], [
      { label: I18N.t("energy.kwh"), stroke: "#22d3ee", width: 2 },
      { label: I18N.t("energy.full"), stroke: "#94a3b8", dash: [6, 4] },
    ], { days: true, range: [0, top] });
    const money = (v) => `${I18N.number(v, 2)} ${e.currency}`;
    const rows = items.slice().reverse().map((i) => App.el("tr", { dataset: { night: i.period } },
      App.el("td", {}, I18N.date(i.period)),
      App.el("td", {}, I18N.number(i.energy_kwh, 1)),
      App.el("td", {}, I18N.number(i.full_power_kwh, 1)),
      App.el("td", {}, i.saving_pct === null ? "—" : `${I18N.number(i.saving_kwh, 1)} (${I18N.number(i.saving_pct, 1)} %)`),
      App.el("td", {}, money(i.cost)),
      App.el("td", {}, I18N.number(i.co2_kg, 1))));
    document.querySelector("#energy tbody").replaceChildren(...rows);
    const flagged = items.reduce((n, i) => n + i.flagged.reset + i.flagged.gap + i.flagged.estimated, 0);
    document.getElementById("energy-note").textContent = I18N.t("energy.note", {
      tariff: e.tariff, currency: e.currency, co2: e.co2_kg_per_kwh, flagged: I18N.number(flagged),
    });
  },

  day(ts) {
    // A night is labelled by the date it begins on, in the city's time zone.
    return I18N.day(ts * 1e3);
  },

  // -- tickets -------------------------------------------------------------------------------------------

  setupTicketFilters() {
    const sel = document.getElementById("tf-district");
    for (const d of this.layout.districts) sel.appendChild(App.el("option", { value: d.code, dataset: { district: d.code } }, this.districtName(d.code)));
    for (const id of ["tf-status", "tf-priority", "tf-district"]) {
      document.getElementById(id).addEventListener("change", () => this.refreshTickets());
    }
  },

  async refreshTickets() {
    for (const o of document.querySelectorAll("#tf-district option[data-district]")) {
      if (o instanceof HTMLElement) o.textContent = this.districtName(o.dataset.district);
    }
    const q = new URLSearchParams({ limit: "100" });
    const status = App.field("tf-status").value;
    if (status === "live") for (const s of ["open", "dispatched", "acknowledged", "reopened"]) q.append("status", s);
    else if (status) q.append("status", status);
    const priority = App.field("tf-priority").value;
    if (priority) q.append("priority", priority);
    const district = App.field("tf-district").value;
    if (district) q.append("district", district);
    const page = await App.api("/api/v1/tickets?" + q);
    document.getElementById("tickets-total").textContent = I18N.t("tickets.total", { n: I18N.number(page.total) });
    const operator = App.can("operator");
    const rows = page.items.map((t) => {
      const actions = App.el("td", { class: "actions" });
      if (operator && ["open", "dispatched", "reopened"].includes(t.status)) {
        actions.appendChild(App.el("button", { class: "small", onclick: () => this.ticketAction(t.id, "acknowledge") }, I18N.t("action.acknowledge")));
      }
      if (operator && !["resolved", "verified", "cancelled", "transient"].includes(t.status)) {
        actions.appendChild(App.el("button", { class: "small", onclick: () => this.ticketAction(t.id, "resolve") }, I18N.t("action.resolve")));
        actions.appendChild(App.el("button", { class: "small danger", onclick: () => this.ticketAction(t.id, "cancel") }, I18N.t("action.cancel")));
      }
      const asset = App.el("a", { href: "#", onclick: (e) => { e.preventDefault(); this.showAsset(t); } }, t.asset_id);
      return App.el("tr", { class: t.overdue ? "overdue" : "", dataset: { ticket: t.id, asset: t.asset_id } },
        App.el("td", {}, `#${t.id}`), App.el("td", { class: `prio ${t.priority}` }, t.priority),
        App.el("td", {}, I18N.fault(t.fault)), App.el("td", {}, asset), App.el("td", {}, this.districtName(t.district)),
        App.el("td", {}, t.crew || "—"), App.el("td", { class: `status ${t.status}` }, I18N.t("status." + t.status)),
        App.el("td", {}, I18N.dateTime(t.opened_at)), App.el("td", {}, I18N.dateTime(t.deadline)), actions);
    });
    const body = document.querySelector("#tickets tbody");
    if (rows.length) body.replaceChildren(...rows);
    else body.replaceChildren(App.el("tr", {}, App.el("td", { colspan: 10, class: "hint" }, I18N.t("tickets.empty"))));
  },

  showAsset(t) {
    const lamp = t.asset_type === "lamp" ? t.asset_id : (t.lamps && t.lamps[0]);
    if (lamp) {
      this.map.focus(lamp, 40000);
      this.inspect(lamp);
    }
  },

  async ticketAction(id, action) {
    try {
      const body = { action };
      if (action === "resolve") body.note = "resolved from the control room";
      await App.api(`/api/v1/tickets/${id}/actions`, { json: body });
      await this.refreshTickets();
    } catch (err) {
      App.error(err);
    }
  },

  // -- commands ------------------------------------------------------------------------------------------

  setupCommands() {
    const form = document.getElementById("cmd-form");
    if (!App.can("operator")) {
      document.getElementById("command-panel").hidden = true;
      return;
    }
    document.getElementById("cmd-target").addEventListener("change", () => this.fillTargetValues());
    document.getElementById("cmd-op").addEventListener("change", () => {
      document.getElementById("cmd-level-label").hidden = App.field("cmd-op").value !== "dim";
    });
    this.fillTargetValues();
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.sendCommand();
    });
    document.getElementById("cmd-cancel").addEventListener("click", async () => {
      if (!this.campaign) return;
      try {
        await App.api(`/api/v1/commands/${this.campaign}/cancel`, { method: "POST" });
      } catch (err) {
        App.error(err);
      }
    });
  },

  fillTargetValues() {
    const kind = App.field("cmd-target").value;
    const select = App.field("cmd-value-select");
    const text = document.getElementById("cmd-value-text");
    const label = document.getElementById("cmd-value-label");
    label.hidden = kind === "all";
    const choices = kind === "district"
      ? this.layout.districts.map((d) => [d.code, this.districtName(d.code)])
      : kind === "road_class" ? ["expressway", "arterial", "secondary", "branch"].map((c) => [c, I18N.t("class." + c)]) : null;
    select.hidden = !choices;
    text.hidden = !!choices || kind === "all";
    if (choices) {
      const keep = select.value;
      select.replaceChildren(...choices.map(([v, name]) => App.el("option", { value: v }, name)));
      if (choices.some(([v]) => v === keep)) select.value = keep;
    }
  },

  async sendCommand() {
    const kind = App.field("cmd-target").value;
    const select = App.field("cmd-value-select");
    const text = App.field("cmd-value-text").value.trim();
    const target = kind === "all" ? { all: true }
      : kind === "district" ? { district: select.value }
      : kind === "road_class" ? { road_class: select.value }
      : kind === "road" ? { road: text }
      : kind === "cabinet" ? { cabinet: text }
      : { lamps: text.split(/[\s,]+/).filter(Boolean) };
    const choice = App.field("cmd-op").value;
    const body = { target, op: choice === "on" || choice === "off" ? "switch" : choice };
    if (choice === "on" || choice === "off") body.on = choice === "on";
    if (choice === "dim") body.level = Number(App.field("cmd-level").value);
    const until = App.field("cmd-until").value;
    if (until && ["switch", "dim"].includes(body.op)) body.until = new Date(until).toISOString();
    const reason = App.field("cmd-reason").value.trim();
    if (reason) body.reason = reason;
    try {
      const r = await App.api("/api/v1/commands", { json: body });
      this.follow(r.id);
      await this.refreshCommands();
    } catch (err) {
      App.error(err);
    }
  },

  async follow(id) {
    this.campaign = id;
    const box = document.getElementById("cmd-progress");
    box.hidden = false;
    box.dataset.command = id;
    for (;;) {
      let s;
      try {
        s = await App.api(`/api/v1/commands/${id}`);
      } catch (err) {
        App.error(err);
        return;
      }
      if (this.campaign !== id) return;
      const done = s.acked + s.failed + s.expired + s.cancelled;
      const pct = s.total ? Math.floor((done * 100) / s.total) : 100;
      document.getElementById("cmd-bar").style.width = `${pct}%`;
      document.getElementById("cmd-pct").textContent = `${pct} %`;
      box.dataset.percent = String(pct);
      document.getElementById("cmd-counts").textContent = I18N.t("cmd.progress", {
        done: I18N.number(done), total: I18N.number(s.total), acked: I18N.number(s.acked),
        failed: I18N.number(s.failed), expired: I18N.number(s.expired),
      });
      document.getElementById("cmd-status").textContent = I18N.t("cmd.status", { status: s.status });
      document.getElementById("cmd-cancel").hidden = !["queued", "running"].includes(s.status);
      if (!["queued", "running"].includes(s.status)) {
        await this.refreshCommands();
        return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  },

  async refreshCommands() {
    if (!App.can("operator") && !App.can("viewer")) return;
    const page = await App.api("/api/v1/commands?limit=8");
    document.getElementById("cmd-recent").replaceChildren(...page.items.map((c) => {
      const tgt = Object.entries(c.target).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.length : v}`).join(", ");
      return App.el("li", {}, App.el("a", { href: "#", onclick: (e) => { e.preventDefault(); this.follow(c.id); } },
        `${I18N.dateTime(c.created_at)} ${c.op} ${tgt} — ${c.actor} — ${c.status}`));
    }));
  },

  // -- the lamp inspector ---------------------------------------------------------------------------------

  async inspect(id) {
    this.inspected = id;
    const panel = document.getElementById("lamp-panel");
    panel.hidden = false;
    panel.dataset.lamp = id;
    document.getElementById("lamp-title").textContent = I18N.t("lamp.title", { id });
    const from = new Date(App.now() - 24 * 3600 * 1000).toISOString();
    const to = new Date(App.now() + 5 * 60 * 1000).toISOString();
    const [lamp, tel, archive] = await Promise.all([
      App.api(`/api/v1/lamps/${encodeURIComponent(id)}`),
      App.api(`/api/v1/lamps/${encodeURIComponent(id)}/telemetry?limit=2000&from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`),
      App.api(`/api/v1/lamps/${encodeURIComponent(id)}/archive`),
    ]);
    if (this.inspected !== id) return;
    const latest = lamp.latest;
    const facts = [
      ["lamp.condition", lamp.condition ? I18N.t("cond." + lamp.condition) : "—"],
      ["lamp.due", lamp.due ? I18N.t("lamp.yes") : I18N.t("lamp.no")],
      ["col.district", this.districtName(lamp.district)],
      ["lamp.road", lamp.road_name_zh && I18N.lang === "zh" ? lamp.road_name_zh : lamp.road_name_en || lamp.road_id || "—"],
      ["lamp.cabinet", lamp.cabinet_id || "—"],
      ["lamp.state", latest ? (latest.on ? I18N.t("lamp.on") : I18N.t("lamp.off")) : I18N.t("lamp.never")],
      ["lamp.level", latest ? `${latest.dim} %` : "—"],
      ["lamp.power", latest && latest.power_w !== null ? `${I18N.number(latest.power_w, 1)} W` : "—"],
      ["lamp.reported", latest ? I18N.dateTime(latest.ts) : "—"],
    ];
    document.getElementById("lamp-state").replaceChildren(...facts.flatMap(([k, v]) => [App.el("dt", {}, I18N.t(k)), App.el("dd", {}, String(v))]));
    const cmds = document.getElementById("lamp-commands");
    cmds.replaceChildren();
    if (App.can("operator")) {
      const send = async (body) => {
        try {
          const r = await App.api("/api/v1/commands", { json: { target: { lamps: [id] }, ...body } });
          this.follow(r.id);
        } catch (err) {
          App.error(err);
        }
      };
      cmds.append(
        App.el("button", { class: "small", onclick: () => send({ op: "switch", on: true }) }, I18N.t("cmd.op_on")),
        App.el("button", { class: "small", onclick: () => send({ op: "switch", on: false }) }, I18N.t("cmd.op_off")),
        App.el("button", { class: "small", onclick: () => send({ op: "dim", level: 50 }) }, `${I18N.t("cmd.op_dim")} 50 %`),
        App.el("button", { class: "small", onclick: () => send({ op: "resume" }) }, I18N.t("cmd.op_resume")),
      );
    }
    const rows = tel.items || [];
    const xs = rows.map((r) => Date.parse(r.ts) / 1000);
    this.chart("lamp-chart", [xs, rows.map((r) => r.power_w), rows.map((r) => r.dim)], [
      { label: `${I18N.t("lamp.power")} (W)`, stroke: "#facc15", width: 2 },
      { label: `${I18N.t("lamp.level")} (%)`, stroke: "#38bdf8" },
    ], { height: 140, range: (u, mn, mx) => [0, Math.max(mx || 0, 100)], x: [Date.parse(from) / 1000, App.now() / 1000] });
    const entries = [
      ...(archive.tickets || []).map((t) => App.el("li", {},
        `#${t.id} ${t.priority} ${I18N.fault(t.fault)} — ${I18N.t("status." + t.status)} — ${I18N.dateTime(t.opened_at)}`)),
      ...(archive.commands || []).map((c) => App.el("li", { class: "command" },
        `${I18N.dateTime(c.created_at)} ${c.op}${c.params && c.params.level !== undefined && c.params.level !== null ? " " + c.params.level + " %" : ""} — ${c.actor} — ${c.state}`)),
    ];
    document.getElementById("lamp-archive").replaceChildren(...(entries.length ? entries : [App.el("li", { class: "hint" }, I18N.t("lamp.no_archive"))]));
  },
};

Control.start().catch((err) => {
  if (err.message !== "signed out") App.error(err);
});
