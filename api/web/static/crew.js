// The crew page, for a phone: my crew's open tickets by deadline, where they are, what to do, live.
import { App } from "./common.js";
import { I18N } from "./i18n.js";

const LIVE = ["open", "dispatched", "acknowledged", "reopened"];

const Crew = {
  tickets: [],
  details: {},
  refreshTimer: null,

  async start() {
    await App.start();
    window.lamplighter = this;
    document.addEventListener("languagechange", () => this.render());
    await this.refresh();
    App.stream("/api/v1/tickets/events", { ticket: (e) => this.onEvent(e) }, (ok) => this.live(ok));
    setInterval(() => this.render(), 60000); // deadlines count down
  },

  live(ok) {
    const el = document.getElementById("live");
    el.className = `live ${ok ? "on" : "off"}`;
    el.dataset.i18n = ok ? "live.connected" : "live.lost";
    el.textContent = I18N.t(el.dataset.i18n);
  },

  onEvent(e) {
    if (e.action === "opened" || (e.to_status === "dispatched" && !this.details[e.ticket_id])) {
      App.toast(I18N.t("crew.new", { id: e.ticket_id }));
    }
    delete this.details[e.ticket_id];
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh(), 250);
  },

  async refresh() {
    const q = new URLSearchParams({ limit: "200" });
    for (const s of LIVE) q.append("status", s);
    const page = await App.api("/api/v1/tickets?" + q);
    const deadline = (t) => (t.deadline ? Date.parse(t.deadline) : Infinity);
    this.tickets = page.items.sort((a, b) => deadline(a) - deadline(b) || a.id - b.id);
    await Promise.all(this.tickets.filter((t) => !this.details[t.id]).map(async (t) => {
      this.details[t.id] = await App.api(`/api/v1/tickets/${t.id}`);
    }));
    this.render();
  },

  render() {
    const cards = document.getElementById("cards");
    document.getElementById("empty").hidden = this.tickets.length > 0;
    // Keep what a crew member is typing: re-render only cards whose ticket changed.
    const keep = new Map([...cards.children].map((c) => [/** @type {HTMLElement} */ (c).dataset.key, c]));
    const next = this.tickets.map((t) => {
      const d = this.details[t.id] || t;
      const key = `${t.id}:${d.status}:${(d.history || []).length}:${I18N.lang}:${Math.floor(App.now() / 60000)}`;
      return keep.get(key) || this.card(d, key);
    });
    cards.replaceChildren(...next);
  },

  card(t, key) {
    const now = App.now();
    const due = t.deadline ? Date.parse(t.deadline) - now : null;
    const dueText = due === null ? "" : due >= 0 ? I18N.t("crew.due_in", { t: I18N.duration(due) }) : I18N.t("crew.overdue", { t: I18N.duration(due) });
    const loc = t.location;
    const where = loc
      ? App.el("p", { class: "where" }, `${I18N.t("crew.location")}: ${loc.lat.toFixed(5)}, ${loc.lon.toFixed(5)} `,
        App.el("a", { class: "button small", href: `geo:${loc.lat},${loc.lon}?q=${loc.lat},${loc.lon}(${encodeURIComponent(t.asset_id)})` }, I18N.t("crew.open_map")))
      : null;
    const lamps = (t.lamps || []).length
      ? App.el("details", {}, App.el("summary", {}, `${I18N.t("crew.lamps")} (${t.lamps.length})`), App.el("p", { class: "mono" }, t.lamps.join(", ")))
      : null;
    const history = App.el("details", {}, App.el("summary", {}, I18N.t("crew.history")),
      App.el("ol", { class: "history" }, ...(t.history || []).map((h) => App.el("li", {},
        `${I18N.dateTime(h.ts)} ${h.actor}: ${h.action}${h.note ? " — " + h.note : ""}${h.parts && h.parts.length ? " [" + h.parts.join(", ") + "]" : ""}`))));
    const note = App.el("textarea", { rows: 2, class: "note", "data-i18n-placeholder": "crew.note", placeholder: I18N.t("crew.note") });
    const parts = App.el("input", { class: "parts", placeholder: I18N.t("crew.parts") });
    const act = (action) => this.act(t.id, action, note.value.trim(), parts.value.split(",").map((p) => p.trim()).filter(Boolean));
    const buttons = App.el("div", { class: "row buttons" });
    if (["open", "dispatched", "reopened"].includes(t.status)) {
      buttons.appendChild(App.el("button", { class: "primary", dataset: { action: "acknowledge" }, onclick: () => act("acknowledge") }, I18N.t("action.acknowledge")));
    }
    buttons.appendChild(App.el("button", { dataset: { action: "comment" }, onclick: () => act("comment") }, I18N.t("action.comment")));
    buttons.appendChild(App.el("button", { class: "good", dataset: { action: "resolve" }, onclick: () => act("resolve") }, I18N.t("action.resolve")));
    return App.el("article", { class: `card ticket ${t.overdue ? "overdue" : ""}`, dataset: { key, ticket: t.id, status: t.status } },
      App.el("header", {}, App.el("b", { class: `prio ${t.priority}` }, t.priority), ` #${t.id} `, App.el("b", {}, I18N.fault(t.fault)),
        App.el("span", { class: `status ${t.status}` }, I18N.t("status." + t.status))),
      App.el("p", {}, `${t.asset_id} · ${(I18N.lang === "zh" ? t.district_zh : t.district_en) || t.district}`),
      App.el("p", { class: due !== null && due < 0 ? "bad" : "hint" }, dueText),
      where, lamps, history, note, parts, buttons);
  },

  async act(id, action, note, parts) {
    try {
      await App.api(`/api/v1/tickets/${id}/actions`, { json: { action, note, parts } });
      delete this.details[id];
      await this.refresh();
    } catch (err) {
      App.error(err);
    }
  },
};

Crew.start().catch((err) => {
  if (err.message !== "signed out") App.error(err);
});
