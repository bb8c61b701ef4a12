// The login form: sign in, then on to the page asked for (a path of this site only) or the role's own page.
import { I18N } from "./i18n.js";

I18N.apply();
let chosen = false;  // a language picked here becomes the account's at sign-in
document.getElementById("lang-toggle").addEventListener("click", () => {
  I18N.lang = I18N.lang === "zh" ? "en" : "zh";
  localStorage.setItem("ll.lang", I18N.lang);
  chosen = true;
  I18N.apply();
});
document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const field = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
  const body = { name: field("name").value.trim(), password: field("password").value };
  const r = await fetch("/api/v1/login", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!r.ok) {
    const err = document.getElementById("login-error");
    if (r.status !== 401) {
      err.removeAttribute("data-i18n");
      try { err.textContent = (await r.json()).error.message; } catch (_) { err.textContent = r.statusText; }
    }
    err.hidden = false;
    return;
  }
  const { user } = await r.json();
  if (chosen && user.lang !== I18N.lang) {
    await fetch("/api/v1/me", {
      method: "PATCH", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ lang: I18N.lang }),
    });
  }
  location.href = sameSitePath(new URLSearchParams(location.search).get("next")) || (user.role === "crew" ? "/crew" : "/");
});

// Only a path of this site: "/\host", "//host" and "https:…" resolve elsewhere and are dropped.
function sameSitePath(next) {
  if (!next || !next.startsWith("/")) return null;
  try {
    const u = new URL(next, location.origin);
    return u.origin === location.origin ? u.pathname + u.search + u.hash : null;
  } catch (_) {
    return null;
  }
}
