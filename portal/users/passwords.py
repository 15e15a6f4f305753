"""What a typed password becomes before it is hashed, verified, compared or sent to a directory.

The same password can reach the portal in several Unicode forms: `Ä` composed (U+00C4) from one
keyboard, `A` followed by U+0308 from another, `ﬁ` as a ligature or `Ｐ` full width when pasted.
NIST SP 800-63B §5.1.1.2 asks verifiers to normalize memorized secrets with NFKC (or NFKD) before
hashing them; the policy already counts lengths after NFKC, so NFKC it is, everywhere.

Hashes and directory passwords written before the portal normalized hold the password as it was
typed. They keep working: when the normalized form fails and the typed form differs from it, the
typed form is tried too. Everything new is written in the normalized form only.
"""

from __future__ import annotations

import unicodedata


def normalize_password(password: str) -> str:
    """Return the password in Unicode NFKC form, nothing else changed (NIST SP 800-63B §5.1.1.2)."""
    return unicodedata.normalize("NFKC", password)


def password_candidates(password: str) -> tuple[str, ...]:
    """Return the forms to check, in order: the normalized one, then as typed if that differs."""
    normalized = normalize_password(password)
    # SECURITY: a second form only when it is a different string, so an ordinary wrong password
    # costs one verification (one failed bind for a directory's lockout counter), not two.
    return (normalized,) if normalized == password else (normalized, password)
