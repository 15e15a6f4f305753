"""A protected app that checks the portal's signed identity token (identity_token) with PyJWT.

Behind nginx with snippets/portal-authrequest.conf, every request the portal lets through
carries `Remote-JWT`. The app trusts it only once the signature (a key from the portal's
/.well-known/jwks.json, fetched and cached by PyJWT's PyJWKClient), the issuer (the portal's
authelia_url), the audience (this site's own origin) and the times check out:

    pip install 'pyjwt[crypto]'
    PORTAL_URL=https://auth.example.com APP_ORIGIN=https://app.example.com \\
        python identity_token_app.py      # serves http://127.0.0.1:8080 (nginx's proxy_pass)

An app listed in identity_token.applications checks its shared secret instead:
`jwt.decode(token, SECRET, algorithms=["HS256"], audience=ORIGIN, issuer=PORTAL)`.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt


class IdentityChecker:
    """Check identity tokens issued by `issuer` for `audience`, keys from the portal's JWKS."""

    def __init__(self, issuer: str, audience: str, jwks_url: str | None = None) -> None:
        self.issuer, self.audience = issuer, audience
        # Cached for 5 minutes; a token naming an unknown kid makes it fetch the set again.
        self.keys = jwt.PyJWKClient(jwks_url or f"{issuer}/.well-known/jwks.json", lifespan=300)

    def claims(self, token: str) -> dict[str, Any]:
        """Return the token's claims (sub, name, email, groups, amr, ...); raise jwt.PyJWTError."""
        key = self.keys.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key,
            algorithms=["ES256", "RS256", "EdDSA"],  # never "none", never HS* with a public key
            audience=self.audience,
            issuer=self.issuer,
            options={"require": ["iss", "aud", "sub", "exp", "iat"]},
        )


def main() -> None:
    """Serve one page that greets the user the token names, or answers 401."""
    checker = IdentityChecker(os.environ["PORTAL_URL"], os.environ["APP_ORIGIN"])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                claims = checker.claims(self.headers.get("Remote-JWT", ""))
            except jwt.PyJWTError:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"hello": claims["name"], "groups": claims["groups"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

    HTTPServer(("127.0.0.1", 8080), Handler).serve_forever()


if __name__ == "__main__":
    main()
