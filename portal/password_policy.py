"""The password policy: whether a new password is acceptable, and the rules as hints for the form.

Pure functions, no I/O. A password is normalized with NFKC (`normalize_password`, as every
backend hashes and checks it) and counted in characters (code points). The always-rules (not
empty, at most `MAX_LENGTH` characters) hold whatever the configuration says; the `standard`
rules and the zxcvbn strength estimate apply only when enabled, with Authelia's meaning.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from zxcvbn import zxcvbn

from portal.config import PasswordPolicyConfig
from portal.i18n import N_, SOURCE_LANGUAGE, current_language, gettext
from portal.users.passwords import normalize_password

# SECURITY: the portal's own ceiling whatever the policy; a password hash over unbounded input
# is a denial-of-service lever, and refusing (never truncating) keeps what is stored the same as
# what the user typed.
MAX_LENGTH = 1024

# zxcvbn's matching grows much faster than linearly with the length of the password (and 4.5.0
# raises on anything over its max_length), so only this prefix is scored. Scoring a prefix can
# only underestimate the strength: the characters after it never make a weak password pass.
ZXCVBN_SCORED_LENGTH = 100

# SECURITY: zxcvbn 4.5.0 stores the context words of each call in a module-level dictionary
# (matching.RANKED_DICTIONARIES["user_inputs"]) before matching. Two calls in different worker
# threads would score one user's password against the other user's words, so calls take turns.
# This lock guards that third-party global; it is not the portal's state.
_ZXCVBN_LOCK = threading.Lock()

_EMPTY = N_("Enter a new password.")
_TOO_EASY = N_("This password is too easy to guess.")
_DEFAULT_ADVICE = N_("Add another word or two; uncommon words are better.")


def check_password(
    password: str, policy: PasswordPolicyConfig, *, user_inputs: Sequence[str] = ()
) -> list[str]:
    """Return the reasons the password is refused, in form order; an empty list accepts it."""
    candidate = normalize_password(password)
    # SECURITY: never accept an empty password, even with every rule off (Authelia does).
    if not candidate:
        return [gettext(_EMPTY)]
    reasons: list[str] = []
    reasons.extend(_length_reasons(candidate, policy))
    if policy.standard.enabled:
        reasons.extend(_character_reasons(candidate, policy))
    if policy.zxcvbn.enabled:
        reasons.extend(_strength_reasons(candidate, policy.zxcvbn.min_score, user_inputs))
    return reasons


def describe(policy: PasswordPolicyConfig) -> list[str]:
    """Return the enabled rules as short hints to show next to the password field."""
    hints: list[str] = []
    standard = policy.standard
    if standard.enabled:
        hints.append(gettext("At least %(count)s characters") % {"count": standard.min_length})
        if standard.max_length:
            hints.append(gettext("At most %(count)s characters") % {"count": standard.max_length})
        if standard.require_uppercase:
            hints.append(gettext("An uppercase letter"))
        if standard.require_lowercase:
            hints.append(gettext("A lowercase letter"))
        if standard.require_number:
            hints.append(gettext("A number"))
        if standard.require_special:
            hints.append(gettext("A symbol or a space"))
    if policy.zxcvbn.enabled:
        hints.append(gettext("Hard to guess: avoid common words, names, dates and sequences"))
    return hints


def _length_reasons(candidate: str, policy: PasswordPolicyConfig) -> list[str]:
    """Return the length reason, counting characters after NFKC, never bytes."""
    standard = policy.standard
    longest = MAX_LENGTH
    if standard.enabled and standard.max_length:
        longest = min(standard.max_length, MAX_LENGTH)
    if standard.enabled and len(candidate) < standard.min_length:
        return [gettext("Use at least %(count)s characters.") % {"count": standard.min_length}]
    # SECURITY: refuse rather than truncate; see MAX_LENGTH.
    if len(candidate) > longest:
        return [gettext("Use at most %(count)s characters.") % {"count": longest}]
    return []


def _character_reasons(candidate: str, policy: PasswordPolicyConfig) -> list[str]:
    """Return one reason per required character class the password lacks."""
    standard = policy.standard
    reasons: list[str] = []
    # str.isupper / islower per character, so non-ASCII letters (É, Ж) count too.
    if standard.require_uppercase and not any(c.isupper() for c in candidate):
        reasons.append(gettext("Add an uppercase letter."))
    if standard.require_lowercase and not any(c.islower() for c in candidate):
        reasons.append(gettext("Add a lowercase letter."))
    if standard.require_number and not any(c.isdigit() for c in candidate):
        reasons.append(gettext("Add a number."))
    if standard.require_special and all(c.isalpha() or c.isdigit() for c in candidate):
        reasons.append(gettext("Add a symbol or a space."))
    return reasons


def _strength_reasons(candidate: str, min_score: int, user_inputs: Sequence[str]) -> list[str]:
    """Return the strength reason, with zxcvbn's own advice, when the score is below min_score."""
    scored = candidate[:ZXCVBN_SCORED_LENGTH]
    # Context words are normalized as the password is, so they match what is scored.
    normalized = map(normalize_password, user_inputs)
    words = [word[:ZXCVBN_SCORED_LENGTH] for word in normalized if word.strip()]
    with _ZXCVBN_LOCK:
        result = zxcvbn(scored, user_inputs=words, max_length=ZXCVBN_SCORED_LENGTH)
    if int(result["score"]) >= min_score:
        return []
    feedback = result.get("feedback") or {}
    advice = [str(feedback.get("warning") or "")]
    advice.extend(str(text) for text in feedback.get("suggestions") or ())
    advice = [_sentence(text) for text in advice if text.strip()]
    # zxcvbn's advice is in English only: other languages get the portal's own.
    if not advice or current_language() != SOURCE_LANGUAGE:
        advice = [gettext(_DEFAULT_ADVICE)]
    # SECURITY: the text comes from zxcvbn's fixed messages and ours; never the password itself.
    return [" ".join([gettext(_TOO_EASY), *advice])]


def _sentence(text: str) -> str:
    """Return the text trimmed and ending with a full stop."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."
