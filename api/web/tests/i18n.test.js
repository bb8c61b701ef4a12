// The pages' words and formats, as Node runs them: both languages carry the same keys and placeholders, faults
// fall back to readable words, and numbers, times and durations come out in the page's language and the city's
// time zone.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FAULTS, I18N, MESSAGES } from "../static/i18n.js";

/** @param {string} text */
const placeholders = (text) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

test("both languages have the same keys, each with the same placeholders", () => {
  assert.deepEqual(Object.keys(MESSAGES.zh).sort(), Object.keys(MESSAGES.en).sort());
  for (const key of Object.keys(MESSAGES.en)) {
    assert.deepEqual(placeholders(MESSAGES.zh[key]), placeholders(MESSAGES.en[key]), key);
  }
  assert.deepEqual(Object.keys(FAULTS.zh).sort(), Object.keys(FAULTS.en).sort());
});

test("t fills placeholders, leaves unknown ones visible, and falls back to English, then to the key", () => {
  I18N.lang = "en";
  assert.equal(I18N.t("kpi.overdue", { n: 3 }), "3 overdue");
  assert.equal(I18N.t("kpi.overdue", {}), "{n} overdue");
  assert.equal(I18N.t("no.such.key"), "no.such.key");
  I18N.lang = "zh";
  assert.match(I18N.t("kpi.rate"), /[\u4e00-\u9fff]/);
});

test("a fault the catalogue does not name yet reads as words, not as a code", () => {
  I18N.lang = "en";
  assert.equal(I18N.fault("leakage_current"), "Leakage current");
  assert.equal(I18N.fault("brand_new_fault"), "brand new fault");
  I18N.lang = "zh";
  assert.equal(I18N.fault("leakage_current"), "漏电");
});

test("numbers, times and durations in the page's language and the city's time zone", () => {
  I18N.lang = "en";
  I18N.timezone = "Asia/Shanghai";
  assert.equal(I18N.number(110000), "110,000");
  assert.equal(I18N.number(97.456, 1), "97.5");
  assert.equal(I18N.number(null), "—");
  assert.equal(I18N.number(Number.NaN), "—");
  assert.equal(I18N.time("2026-12-01T11:05:00Z"), "19:05"); // UTC+8
  assert.equal(I18N.dateTime(null), "—");
  assert.equal(I18N.duration(90 * 60_000), "1 h 30 min");
  assert.equal(I18N.duration(-5 * 60_000), "5 min");
  I18N.lang = "zh";
  assert.equal(I18N.duration(90 * 60_000), "1 小时 30 分钟");
});
