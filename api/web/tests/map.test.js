// The map's decoding of the bytes the API sends (base64 of little-endian arrays), as Node runs it.
import assert from "node:assert/strict";
import { test } from "node:test";

import { CONDITION_COLORS, decode } from "../static/map.js";

test("decode turns the API's base64 into the typed array it was made from", () => {
  const sent = new Float32Array([1.5, -2.25, 0, 1e6]);
  const b64 = Buffer.from(sent.buffer).toString("base64");
  assert.deepEqual(decode(b64, Float32Array), sent);
  const codes = new Uint8Array([0, 1, 2, 255]);
  assert.deepEqual(decode(Buffer.from(codes).toString("base64"), Uint8Array), codes);
  assert.equal(decode("", Uint8Array).length, 0);
});

test("every condition the state bytes name has a colour", () => {
  for (const condition of ["lit", "dark", "unknown", "day_burning", "in_ticket"]) {
    assert.ok(CONDITION_COLORS[condition], condition);
  }
});
