"""The catalogs' check, run by `make lint`: every message extracted, translated, none fuzzy; no
user-visible text in a checked template outside gettext, nor in the portal's own scripts (they
show what the page hands them from the catalogs, see templates/_macros.html).

    python -m portal.i18n_check            print each problem, exit 1 if any
    python -m portal.i18n_check --update   merge newly extracted messages into every catalog
                                           (new ones empty: the check fails until translated)

Messages are extracted with Babel's API (extract_from_dir: Python's `_`, `gettext`, `N_`, ...
in portal/, Jinja2's `_()` in templates/), as `pybabel extract` does.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from html.parser import HTMLParser
from pathlib import Path

import jinja2
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from portal.i18n import DOMAIN, LANGUAGES, LOCALE_DIR, SOURCE_LANGUAGE

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (
    (ROOT / "portal", [("**.py", "python")]),
    (ROOT / "templates", [("**.html", "jinja2"), ("**.txt", "jinja2")]),
)
# The templates whose every visible text must go through gettext (relative to templates/).
CHECKED_TEMPLATES = ("emails/", "errors/", "pages/", "base.html", "_macros.html")
# Attributes a user reads or hears.
VISIBLE_ATTRIBUTES = frozenset({"alt", "title", "aria-label", "placeholder", "aria-description"})
# The portal's own browser scripts (static/vendor/ holds others' and is not checked).
SCRIPTS = ROOT / "static"
_PLACEHOLDER = "\x00"
_WORD = re.compile(r"[^\W\d_]{2,}")


def extract(sources: Iterable[tuple[Path, list[tuple[str, str]]]] = SOURCES) -> Catalog:
    """Return every message marked in sources (directory, Babel method map) as a template
    catalog (.pot), each with its locations."""
    template = Catalog(domain=DOMAIN)
    for directory, method_map in sources:
        found = extract_from_dir(directory, method_map=method_map)
        for filename, lineno, message, comments, context in found:
            path = str((directory / filename).relative_to(ROOT))
            template.add(
                message, locations=[(path, lineno)], auto_comments=comments, context=context
            )
    return template


def catalog_problems(template: Catalog, catalog: Catalog) -> list[str]:
    """Say what catalog lacks against template: a msgid missing or untranslated (every plural
    form), a fuzzy entry, or an entry no source uses any more."""
    name = str(catalog.locale or "?")
    problems = []
    for message in template:
        if not message.id:
            continue
        entry = catalog.get(message.id, message.context)
        if entry is None:
            problems.append(f"{name}: missing {message.id!r}")
        elif entry.fuzzy:
            problems.append(f"{name}: fuzzy {message.id!r}")
        elif not all(isinstance(s, str) and s.strip() for s in _forms(entry.string)):
            problems.append(f"{name}: untranslated {message.id!r}")
        elif not _placeholders_fit(entry.id, entry.string):
            problems.append(f"{name}: placeholders differ in {_first(entry.id)!r}")
    for entry in catalog:
        if entry.id and template.get(entry.id, entry.context) is None:
            problems.append(f"{name}: not used any more {entry.id!r}")
    return problems


def _forms(string: object) -> Sequence[object]:
    return string if isinstance(string, tuple | list) else (string,)


def _first(msgid: object) -> object:
    return _forms(msgid)[0]


# A printf-style conversion as Python's % operator reads it (named or not), or an escaped %%.
_CONVERSION = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")


def _placeholders_fit(msgid: object, msgstr: object) -> bool:
    """Tell whether a translation formats as its English does: templates format every `_()`
    (newstyle), so a placeholder the English has not is a KeyError and a lone % a ValueError.

    Every % of the translation must start a conversion (%% for a literal one), each conversion
    must be one of the English's (any form, for plurals), and a translation of an English
    without any % has none (Python code may show such a message without formatting it).
    """
    english = [text for text in _forms(msgid) if isinstance(text, str)]
    allowed = {c for text in english for c in _CONVERSION.findall(text)}
    for text in _forms(msgstr):
        if not isinstance(text, str):
            continue
        if "%" in _CONVERSION.sub("", text):
            return False
        if not set(_CONVERSION.findall(text)) <= allowed:
            return False
    return True


class _Text(HTMLParser):
    """Collect the visible text and visible attributes of an HTML (or plain-text) document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        self.found += [value or "" for key, value in attrs if key in VISIBLE_ATTRIBUTES]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.found.append(data)


def template_text_problems(source: str, name: str) -> list[str]:
    """Say which user-visible words of a Jinja template are outside gettext: text between
    tags and visible attributes (alt, title, aria-label, placeholder) of its literal parts;
    whatever a `{{ ... }}` prints counts as translated (it is data or a `_()` call)."""
    env = jinja2.Environment(autoescape=True, extensions=["jinja2.ext.i18n"])
    tree = env.parse(source, name)
    parts = []
    for output in tree.find_all(jinja2.nodes.Output):
        for node in output.nodes:
            data = node.data if isinstance(node, jinja2.nodes.TemplateData) else _PLACEHOLDER
            parts.append(data)
    parser = _Text()
    parser.feed("".join(parts))
    parser.close()
    words = [w for text in parser.found for w in _WORD.findall(text.replace(_PLACEHOLDER, " "))]
    return [f"{name}: text outside gettext: {' '.join(words[:8])}"] if words else []


# A script's string literal ('...', "..." or `...`) and a comment to drop before looking.
_JS_STRING = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|`(?:[^`\\]|\\.)*`""")
_JS_COMMENT = re.compile(r"(?m)^\s*//.*$|\s//\s.*$|/\*[\s\S]*?\*/")
# Words a user reads: two or more words of letters with a space between them.
_SENTENCE = re.compile(r"[^\W\d_]{2,}[,.!?:;'’]*\s+[^\W\d_]{2,}")


def script_text_problems(source: str, name: str) -> list[str]:
    """Say which string literals of a browser script hold words a user reads (two words or
    more): a script's messages come from the page (a JSON block rendered with gettext)."""
    code = _JS_COMMENT.sub("", source)
    found = [s for s in _JS_STRING.findall(code) if _SENTENCE.search(s)]
    return [f"{name}: text outside gettext: {text}" for text in found]


def problems(
    locale_dir: Path = LOCALE_DIR, templates: Path = ROOT / "templates", scripts: Path = SCRIPTS
) -> list[str]:
    """Every problem of the catalogs under locale_dir, of the checked templates and of the
    portal's own scripts."""
    template = extract()
    found = []
    for language in LANGUAGES:
        if language == SOURCE_LANGUAGE:
            continue
        path = locale_dir / language / "LC_MESSAGES" / f"{DOMAIN}.po"
        with path.open("rb") as po:
            found += catalog_problems(template, read_po(po, locale=language))
    for path in sorted(templates.rglob("*")):
        name = path.relative_to(templates).as_posix()
        if path.is_file() and name.startswith(CHECKED_TEMPLATES):
            found += template_text_problems(path.read_text(encoding="utf-8"), name)
    for path in sorted(scripts.glob("*.js")):
        found += script_text_problems(path.read_text(encoding="utf-8"), f"static/{path.name}")
    return found


def update(locale_dir: Path = LOCALE_DIR) -> None:
    """Merge the extracted messages into every catalog (new ones empty, unused ones dropped)."""
    template = extract()
    for language in LANGUAGES:
        if language == SOURCE_LANGUAGE:
            continue
        path = locale_dir / language / "LC_MESSAGES" / f"{DOMAIN}.po"
        if path.exists():
            with path.open("rb") as po:
                catalog = read_po(po, locale=language)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            catalog = Catalog(locale=language, domain=DOMAIN, project="portal")
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        with path.open("wb") as po:
            write_po(po, catalog, sort_output=True, width=100, include_lineno=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check (or --update); return the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--update"]:
        update()
        return 0
    found = problems()
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
