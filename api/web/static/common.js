// Shared by the pages: API calls with the login's cookie, the signed-in user, language switching, live streams.
import { I18N } from "./i18n.js";

export const App = {
  me: null,
  skew: 0, // server time − browser time, ms: deadlines count down on the server's clock

  now() {
    return Date.now() + this.skew;
  },

  /** A form field of the page by its id. @param {string} id @returns {HTMLInputElement} */
  field(id) {
    return /** @type {HTMLInputElement} */ (document.getElementById(id));
  },

  /**
   * A call to the API with the session's cookie; its JSON (or the Response itself with `raw`).
   * @param {string} path
   * @param {Omit<RequestInit, "headers"> & {json?: unknown, raw?: boolean, headers?: Record<string, string>}} [options]
   */
  async api(path, options = {}) {
    /** @type {RequestInit & {headers: Record<string, string>}} */
    const init = { credentials: "same-origin", ...options, headers: { ...options.headers } };
    if (options.json !== undefined) {
      init.method = init.method || "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
    }
    const r = await fetch(path, init);
    if (r.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname);
      throw new Error("signed out");
    }
    if (!r.ok) {
      let message = r.statusText;
      try {
        message = (await r.json()).error.message;
      } catch (_) { /* not our error shape */ }
      throw Object.assign(new Error(message), { status: r.status });
    }
    return options.raw ? r : r.json();
  },

  // Who is signed in; a page calls this first. Applies the user's language and the city's time zone.
  async start() {
    const asked = Date.now();
    this.me = await this.api("/api/v1/me");
    this.skew = Date.parse(this.me.now) - (asked + Date.now()) / 2;
    I18N.timezone = this.me.timezone;
    I18N.lang = this.me.lang;
    localStorage.setItem("ll.lang", I18N.lang);
    I18N.apply();
    const who = document.getElementById("who");
    if (who) who.textContent = `${this.me.name} · ${this.me.role}`;
    document.getElementById("lang-toggle")?.addEventListener("click", () => this.switchLanguage());
    document.getElementById("logout")?.addEventListener("click", async () => {
      await this.api("/api/v1/logout", { method: "POST" });
      location.href = "/login";
    });
    return this.me;
  },

  async switchLanguage() {
    const lang = I18N.lang === "zh" ? "en" : "zh";
    await this.api("/api/v1/me", { method: "PATCH", json: { lang } });
    I18N.lang = lang;
    localStorage.setItem("ll.lang", lang);
    I18N.apply();
    document.dispatchEvent(new CustomEvent("languagechange"));
  },

  // A server-sent event stream that reconnects by itself (the browser does; this shows the state).
  stream(path, events, onState) {
    const source = new EventSource(path, { withCredentials: true });
    for (const [name, handler] of Object.entries(events)) {
      source.addEventListener(name, (e) => handler(JSON.parse(e.data)));
    }
    source.onopen = () => onState && onState(true);
    source.onerror = () => onState && onState(false);
    return source;
  },

  toast(text, kind = "info") {
    const box = document.getElementById("toasts");
    if (!box) return;
    const el = document.createElement("div");
    el.className = `toast ${kind}`;
    el.textContent = text;
    box.appendChild(el);
    setTimeout(() => el.remove(), 6000);
  },

  error(err) {
    const key = err.status === 403 ? "err.forbidden" : "err.generic";
    this.toast(I18N.t(key, { msg: err.message }), "error");
  },

  el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  },

  can(role) {
    const r = this.me && this.me.role;
    if (r === "admin") return true;
    if (role === "viewer") return r === "viewer" || r === "operator";
    return r === role;
  },
};
