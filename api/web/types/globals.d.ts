// What the pages' classic scripts find on `window` besides their own globals: uPlot (vendored, its IIFE build
// loaded before them, typed by its own declarations), and the handle the browser tests read.
declare const uPlot: typeof import("uplot");

interface Window {
  lamplighter: Record<string, unknown>;
}
