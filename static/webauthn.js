// The portal's WebAuthn ceremonies (no library, no inline script: the CSP stays 'self').
// Options come from the portal as JSON with base64url fields; the answer goes back as the
// RegistrationResponseJSON / AuthenticationResponseJSON of WebAuthn Level 3 (section 5.1).

const toBytes = (text) => {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
};

const toText = (buffer) => {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
};

// What the script says, in the page's language: the page's JSON block (templates/_macros.html
// webauthn_script). `answers` translates the JSON API's messages, which are in English.
const block = document.getElementById("webauthn-messages");
const messages = block ? JSON.parse(block.textContent) : { answers: {} };

const descriptors = (list) => (list || []).map((d) => ({ ...d, id: toBytes(d.id) }));

// The portal refused: the message is the portal's, translated.
class PortalAnswer extends Error {}

async function call(method, url, body) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok || data.status !== "OK") {
    throw new PortalAnswer(messages.answers[data.message] || messages.refused);
  }
  return data;
}

function common(credential) {
  return {
    id: credential.id,
    rawId: toText(credential.rawId),
    type: credential.type,
    authenticatorAttachment: credential.authenticatorAttachment || undefined,
    clientExtensionResults: credential.getClientExtensionResults(),
  };
}

export async function register(description) {
  const { data } = await call("PUT", "/api/secondfactor/webauthn/credential/register", {
    description,
  });
  const publicKey = {
    ...data,
    challenge: toBytes(data.challenge),
    user: { ...data.user, id: toBytes(data.user.id) },
    excludeCredentials: descriptors(data.excludeCredentials),
  };
  const credential = await navigator.credentials.create({ publicKey });
  const response = credential.response;
  return call("POST", "/api/secondfactor/webauthn/credential/register", {
    ...common(credential),
    response: {
      clientDataJSON: toText(response.clientDataJSON),
      attestationObject: toText(response.attestationObject),
      transports: response.getTransports ? response.getTransports() : [],
    },
  });
}

export async function authenticate(optionsUrl, answer) {
  const { data } = await call("GET", optionsUrl);
  const publicKey = {
    ...data,
    challenge: toBytes(data.challenge),
    allowCredentials: descriptors(data.allowCredentials),
  };
  const credential = await navigator.credentials.get({ publicKey });
  const response = credential.response;
  return answer({
    ...common(credential),
    response: {
      clientDataJSON: toText(response.clientDataJSON),
      authenticatorData: toText(response.authenticatorData),
      signature: toText(response.signature),
      userHandle: response.userHandle ? toText(response.userHandle) : undefined,
    },
  });
}

function showError(form, error) {
  const box = form.querySelector(".error[role=alert]");
  // A cancelled or timed-out browser prompt is a NotAllowedError: say it plainly. Any other
  // error the browser raises speaks the browser's language, not the page's: say ours.
  box.textContent =
    error.name === "NotAllowedError"
      ? messages.cancelled
      : error instanceof PortalAnswer
        ? error.message
        : messages.refused;
  box.hidden = false;
  box.focus?.();
}

// Reset step 2: with no code typed, the passkey answers; its answer rides in the form's
// hidden `webauthn` field and the form is sent as usual.
async function resetWithPasskey(form) {
  const assertion = await authenticate(form.dataset.options, async (answer) => answer);
  form.elements.webauthn.value = JSON.stringify(assertion);
  form.submit();
}

for (const form of document.querySelectorAll("form[data-webauthn]")) {
  form.addEventListener("submit", async (event) => {
    const code = form.elements.totp_code;
    if (form.dataset.webauthn === "reset" && (form.elements.webauthn.value || (code && code.value))) {
      return; // a code typed, or the passkey's answer already in: send the form as it is
    }
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const kind = form.dataset.webauthn;
      if (kind === "reset") {
        await resetWithPasskey(form);
      } else if (kind === "register") {
        await register(form.elements.description.value);
        window.location.assign("/settings/passkeys/added");
      } else {
        // Sign-in steps: GET the options, POST the assertion, follow the redirect named.
        const target = form.dataset.target || "";
        const result = await authenticate(form.dataset.options, (assertion) =>
          call("POST", form.dataset.answer, { ...assertion, targetURL: target || undefined }),
        );
        window.location.assign((result.data && result.data.redirect) || form.dataset.done || "/");
      }
    } catch (error) {
      showError(form, error);
    } finally {
      button.disabled = false;
    }
  });
}
