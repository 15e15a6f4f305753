"""One normalization for every password the portal hashes, checks or sends (NIST SP 800-63B)."""

from __future__ import annotations

import unicodedata

from portal.users.passwords import normalize_password, password_candidates

NFC = "Corr3ct-Horse-Battery-\u00c4\u00d6\u00dc"
NFD = unicodedata.normalize("NFD", NFC)


def test_the_example_really_is_two_different_strings() -> None:
    assert NFD != NFC
    assert NFD.endswith("A\u0308O\u0308U\u0308")


def test_normalize_applies_nfkc_and_nothing_else() -> None:
    assert normalize_password(NFD) == NFC
    assert normalize_password("\uff50\uff41\uff53\uff53") == "pass"  # full-width "ｐａｓｓ"
    assert normalize_password("\ufb01") == "fi"
    assert normalize_password("  Mixed Case  ") == "  Mixed Case  "


def test_the_typed_form_is_a_second_candidate_only_when_it_differs() -> None:
    assert password_candidates("plain ascii") == ("plain ascii",)
    assert password_candidates(NFC) == (NFC,)
    assert password_candidates(NFD) == (NFC, NFD)
    assert password_candidates("\ufb01sh") == ("fish", "\ufb01sh")
