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
