// Register the proof-of-work workers the vendored ALTCHA widget (its CSP-friendly "external"
// build, which bundles none) runs; served from /static, so the CSP stays 'self'.
const WORKERS = {
  "PBKDF2/SHA-256": "pbkdf2.js",
  "PBKDF2/SHA-384": "pbkdf2.js",
  "PBKDF2/SHA-512": "pbkdf2.js",
  "SHA-256": "sha.js",
  "SHA-384": "sha.js",
  "SHA-512": "sha.js",
};
for (const [algorithm, file] of Object.entries(WORKERS)) {
  globalThis.$altcha.algorithms.set(
    algorithm,
    () => new Worker(`/static/vendor/altcha/workers/${file}`),
  );
}

// The widget's texts in the page's language: the page's JSON block (templates/_macros.html),
// over the widget's English for any key it leaves out; the widget's `language` attribute names
// the page's language, so it picks these.
const block = document.getElementById("altcha-strings");
if (block) {
  const language = document.documentElement.lang || "en";
  const strings = { ...globalThis.$altcha.i18n.get("en"), ...JSON.parse(block.textContent) };
  globalThis.$altcha.i18n.set(language, strings);
}
