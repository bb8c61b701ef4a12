// The pages' scripts: plain browser JavaScript as ES modules, without a build step; uPlot, vendored and loaded
// before them as a classic script, is their one global. Their unit tests run under Node (`node --test`).
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/**", "static/vendor/**"] },
  js.configs.recommended,
  {
    files: ["static/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: { ...globals.browser } },
    rules: {
      "no-unused-vars": ["error", { args: "after-used", argsIgnorePattern: "^_", caughtErrors: "none" }],
      eqeqeq: ["error", "always"],
      "no-var": "error",
      "prefer-const": "error",
    },
  },
  {
    files: ["tests/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: { ...globals.node } },
  },
];
