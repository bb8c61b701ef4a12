// The pages' scripts: plain browser JavaScript without a build step, loaded as classic scripts that share a few
// globals (each file says which it uses with a `/* global … */` line).
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/**", "static/vendor/**"] },
  js.configs.recommended,
  {
    files: ["static/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "script", globals: { ...globals.browser } },
    rules: {
      "no-unused-vars": ["error", { args: "after-used", argsIgnorePattern: "^_", caughtErrors: "none" }],
      eqeqeq: ["error", "always"],
      "no-var": "error",
      "prefer-const": "error",
    },
  },
];
