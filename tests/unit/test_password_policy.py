"""The password policy: NFKC, lengths in characters, character classes, zxcvbn, form hints."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

from portal.config import PasswordPolicyConfig
from portal.password_policy import MAX_LENGTH, check_password, describe
from portal.users.passwords import normalize_password

EMPTY = "Enter a new password."
TOO_EASY = "This password is too easy to guess"
JOHN = ["johndoe", "John Doe", "john.doe@example.com"]


def policy(zxcvbn: int | None = None, **standard: Any) -> PasswordPolicyConfig:
    """Build a policy: standard rules enabled when any are given, zxcvbn when a score is given."""
    raw: dict[str, Any] = {}
    if standard:
        raw["standard"] = {"enabled": True, **standard}
    if zxcvbn is not None:
        raw["zxcvbn"] = {"enabled": True, "min_score": zxcvbn}
    return PasswordPolicyConfig.model_validate(raw)


NO_RULES = PasswordPolicyConfig()
STANDARD = policy(min_length=8)


# --- always ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rules",
    [
        NO_RULES,
        policy(min_length=1),
        policy(zxcvbn=0),
        policy(
            zxcvbn=4,
            min_length=12,
            require_uppercase=True,
            require_lowercase=True,
            require_number=True,
            require_special=True,
        ),
    ],
    ids=["no-rules", "min-length-1", "zxcvbn-score-0", "every-rule"],
)
def test_an_empty_password_is_refused_whatever_the_policy(rules: PasswordPolicyConfig) -> None:
    assert check_password("", rules) == [EMPTY]


@pytest.mark.parametrize(
    "rules", [NO_RULES, STANDARD, policy(zxcvbn=0)], ids=["no-rules", "standard", "zxcvbn"]
)
def test_the_portal_ceiling_accepts_1024_characters_and_refuses_1025(
    rules: PasswordPolicyConfig,
) -> None:
    assert check_password("a" * MAX_LENGTH, rules) == []
    assert check_password("a" * (MAX_LENGTH + 1), rules) == [
        f"Use at most {MAX_LENGTH} characters."
    ]


def test_the_ceiling_is_counted_after_normalization_not_on_what_was_typed() -> None:
    typed = "\ufb01" * 513  # 513 ligatures "ﬁ" become 1026 characters after NFKC

    assert check_password(typed, NO_RULES) == [f"Use at most {MAX_LENGTH} characters."]


def test_with_no_rules_any_nonempty_password_is_accepted() -> None:
    assert check_password("a", NO_RULES) == []


# --- normalization -----------------------------------------------------------------------------


def test_full_width_letters_are_checked_as_the_ascii_letters_they_normalize_to() -> None:
    # Full-width "ｐａｓｓｗｏｒｄ" is scored as "password", zxcvbn's top-10 password.
    reasons = check_password("\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44", policy(zxcvbn=3))

    assert len(reasons) == 1
    assert "top-10 common password" in reasons[0]


def test_a_ligature_counts_as_the_two_characters_it_normalizes_to() -> None:
    assert check_password("\ufb01", policy(min_length=2)) == []
    assert check_password("\ufb01", policy(min_length=3)) == ["Use at least 3 characters."]


def test_length_is_counted_in_characters_not_bytes() -> None:
    eight_emoji = "\U0001f600" * 8  # 32 bytes in UTF-8

    assert check_password(eight_emoji, policy(min_length=8)) == []
    assert check_password(eight_emoji, policy(min_length=8, max_length=8)) == []
    assert check_password(eight_emoji[:7], policy(min_length=8)) == ["Use at least 8 characters."]


# --- length ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "password", "expected"),
    [
        (policy(min_length=8), "abcdefg", ["Use at least 8 characters."]),
        (policy(min_length=8), "abcdefgh", []),
        (policy(enabled=False, min_length=8), "abc", []),
        (policy(min_length=4, max_length=10), "abcdefghijk", ["Use at most 10 characters."]),
        (policy(min_length=4, max_length=10), "abcdefghij", []),
        (policy(enabled=False, min_length=4, max_length=10), "abcdefghijk", []),
        (policy(min_length=4, max_length=0), "a" * 1000, []),
    ],
    ids=[
        "min-on-short",
        "min-on-enough",
        "min-off",
        "max-on-long",
        "max-on-enough",
        "max-off",
        "max-zero-means-no-limit",
    ],
)
def test_length_rules_apply_only_when_the_standard_policy_is_enabled(
    rules: PasswordPolicyConfig, password: str, expected: list[str]
) -> None:
    assert check_password(password, rules) == expected


# --- character classes -------------------------------------------------------------------------

CLASSES = [
    # rule, reason, passwords lacking the class, passwords having it
    (
        "require_uppercase",
        "Add an uppercase letter.",
        ["lowercase1!", "élan vital"],
        ["Élan", "aB"],
    ),
    ("require_lowercase", "Add a lowercase letter.", ["UPPER1!", "ÉLAN VITAL"], ["ÉLAn", "Ab"]),
    ("require_number", "Add a number.", ["no digits here!"], ["digit7", "\uff17 wide"]),
    (
        "require_special",
        "Add a symbol or a space.",
        ["Letters123", "ÉlanЖ7"],
        ["with space", "bang!", "emoji\U0001f600"],
    ),
]


@pytest.mark.parametrize(("rule", "reason", "lacking", "having"), CLASSES, ids=lambda v: str(v))
def test_a_required_character_class_is_refused_only_when_missing(
    rule: str, reason: str, lacking: list[str], having: list[str]
) -> None:
    required = policy(min_length=1, **{rule: True})
    for password in lacking:
        assert check_password(password, required) == [reason], password
    for password in having:
        assert check_password(password, required) == [], password


@pytest.mark.parametrize(("rule", "reason", "lacking", "having"), CLASSES, ids=lambda v: str(v))
def test_a_character_class_rule_that_is_off_refuses_nothing(
    rule: str, reason: str, lacking: list[str], having: list[str]
) -> None:
    for rules in (policy(min_length=1), policy(enabled=False, min_length=1, **{rule: True})):
        for password in lacking:
            assert check_password(password, rules) == [], password


def test_reasons_come_separately_and_in_order_length_classes_then_strength() -> None:
    every_rule = policy(
        zxcvbn=3,
        min_length=8,
        require_uppercase=True,
        require_lowercase=True,
        require_number=True,
        require_special=True,
    )

    reasons = check_password("abc", every_rule)

    assert reasons[:4] == [
        "Use at least 8 characters.",
        "Add an uppercase letter.",
        "Add a number.",
        "Add a symbol or a space.",
    ]
    assert len(reasons) == 5
    assert reasons[4].startswith(TOO_EASY)


# --- strength ----------------------------------------------------------------------------------


def test_a_common_password_is_refused_with_zxcvbns_own_advice() -> None:
    assert check_password("password", policy(zxcvbn=3)) == [
        "This password is too easy to guess. This is a top-10 common password."
        " Add another word or two. Uncommon words are better."
    ]


def test_a_long_random_passphrase_is_accepted() -> None:
    assert check_password("tundra velvet quarry mosaic harbor", policy(zxcvbn=4)) == []


def test_strength_is_not_checked_when_zxcvbn_is_off() -> None:
    assert check_password("password", STANDARD) == []


def test_min_score_zero_accepts_even_the_most_common_password() -> None:
    assert check_password("password", policy(zxcvbn=0)) == []


def test_a_refusal_without_zxcvbn_advice_still_says_what_to_do() -> None:
    # zxcvbn gives no feedback above score 2; "velvet tundra" scores 3.
    assert check_password("velvet tundra", policy(zxcvbn=4)) == [
        "This password is too easy to guess. Add another word or two; uncommon words are better."
    ]


def test_the_users_own_name_and_year_is_refused() -> None:
    reasons = check_password("johndoe2024", policy(zxcvbn=3), user_inputs=JOHN)

    assert len(reasons) == 1
    assert reasons[0].startswith(TOO_EASY)


def test_the_users_own_words_lower_the_score() -> None:
    # At min_score 2 the same password passes for a stranger and fails for John himself.
    rules = policy(zxcvbn=2)

    assert check_password("johndoe2024", rules) == []
    assert check_password("johndoe2024", rules, user_inputs=JOHN) != []


def test_context_words_are_normalized_and_blank_ones_change_nothing() -> None:
    rules = policy(zxcvbn=2)
    wide_username = "\uff4a\uff4f\uff48\uff4e\uff44\uff4f\uff45"  # full-width "ｊｏｈｎｄｏｅ"

    assert check_password("johndoe2024", rules, user_inputs=["", "  "]) == []
    assert check_password("johndoe2024", rules, user_inputs=["", "  ", wide_username]) != []


def test_the_context_of_one_call_does_not_leak_into_the_next() -> None:
    rules = policy(zxcvbn=2)

    assert check_password("johndoe2024", rules, user_inputs=JOHN) != []
    assert check_password("johndoe2024", rules, user_inputs=["alice"]) == []


def test_concurrent_checks_in_threads_each_use_their_own_context_words() -> None:
    rules = policy(zxcvbn=2)
    results: dict[str, list[bool]] = {"john": [], "alice": []}

    def check(name: str, words: list[str]) -> None:
        for _ in range(20):
            results[name].append(check_password("johndoe2024", rules, user_inputs=words) == [])

    threads = [
        threading.Thread(target=check, args=("john", JOHN)),
        threading.Thread(target=check, args=("alice", ["alice", "Alice Liddell"])),
    ]
    # Switch threads as often as possible so an unguarded zxcvbn would mix the two contexts.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    assert results == {"john": [False] * 20, "alice": [True] * 20}


def test_passwords_longer_than_zxcvbns_own_limit_are_scored_without_error() -> None:
    # zxcvbn 4.5.0 raises past 72 characters by default; only a prefix is scored.
    passphrase = "tundra velvet quarry mosaic harbor " * 29  # 1015 characters

    assert check_password(passphrase, policy(zxcvbn=4)) == []
    assert check_password("a" * 500, policy(zxcvbn=3))[0].startswith(TOO_EASY)


@pytest.mark.parametrize(
    "password", ["johndoe2024", "hunter2", "qwerty123", "Tr0ub", "\uff50\uff41\uff53\uff53\uff11"]
)
def test_the_reasons_never_echo_the_password(password: str) -> None:
    strict = policy(
        zxcvbn=4,
        min_length=20,
        max_length=20,
        require_uppercase=True,
        require_lowercase=True,
        require_number=True,
        require_special=True,
    )

    reasons = check_password(password, strict, user_inputs=JOHN)

    assert reasons
    for reason in reasons:
        assert password not in reason
        assert normalize_password(password) not in reason
        assert normalize_password(password).lower() not in reason.lower()


# --- hints -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "hints"),
    [
        (NO_RULES, []),
        (policy(enabled=False, min_length=12, require_number=True), []),
        (STANDARD, ["At least 8 characters"]),
        (policy(min_length=10, max_length=64), ["At least 10 characters", "At most 64 characters"]),
        (
            policy(min_length=8, require_uppercase=True),
            ["At least 8 characters", "An uppercase letter"],
        ),
        (
            policy(min_length=8, require_lowercase=True),
            ["At least 8 characters", "A lowercase letter"],
        ),
        (policy(min_length=8, require_number=True), ["At least 8 characters", "A number"]),
        (
            policy(min_length=8, require_special=True),
            ["At least 8 characters", "A symbol or a space"],
        ),
        (policy(zxcvbn=3), ["Hard to guess: avoid common words, names, dates and sequences"]),
        (
            policy(
                zxcvbn=3,
                min_length=12,
                max_length=128,
                require_uppercase=True,
                require_lowercase=True,
                require_number=True,
                require_special=True,
            ),
            [
                "At least 12 characters",
                "At most 128 characters",
                "An uppercase letter",
                "A lowercase letter",
                "A number",
                "A symbol or a space",
                "Hard to guess: avoid common words, names, dates and sequences",
            ],
        ),
    ],
    ids=[
        "none",
        "standard-off",
        "min-length",
        "max-length",
        "uppercase",
        "lowercase",
        "number",
        "special",
        "zxcvbn",
        "every-rule",
    ],
)
def test_describe_lists_exactly_the_enabled_rules(
    rules: PasswordPolicyConfig, hints: list[str]
) -> None:
    assert describe(rules) == hints
