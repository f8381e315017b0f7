"""Finding untranslated interface text on a page in a real browser: the visible text (text nodes,
options of visible selects, tooltips and accessible labels), then any Latin-letter word on a
Russian page that is not an allowed proper name, or any Cyrillic on an English page.

Any page test can use it: `untranslated(visible_text(page), "ru", allowed)`; each finding
names the word, its text and where it is (the nearest `smartlab-` class, or the tag).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Text a person reads: text nodes of laid-out elements (SVG labels included), the options of a
# visible select, and the tooltips and labels a screen reader reads out.
VISIBLE_TEXT_JS = """() => {
  const shown = (el) => !!el && el.getClientRects().length > 0
    && getComputedStyle(el).visibility !== 'hidden';
  // Where a text is: the nearest element with a smartlab- class, else the tag.
  const where = (el) => {
    const mark = el.closest('[class*="smartlab-"]');
    const name = mark && [...mark.classList].find((c) => c.startsWith('smartlab-'));
    return name || el.tagName.toLowerCase();
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    const el = node.parentElement;
    if (!text || !el || ['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE'].includes(el.tagName)) continue;
    if (el.tagName === 'OPTION' ? shown(el.closest('select')) : shown(el)) {
      out.push([text, where(el)]);
    }
  }
  for (const el of document.querySelectorAll('[title], [aria-label], [placeholder]')) {
    if (!shown(el)) continue;
    for (const name of ['title', 'aria-label', 'placeholder']) {
      const value = (el.getAttribute(name) || '').trim();
      if (value) out.push([value, `${where(el)} @${name}`]);
    }
  }
  return out;
}"""

# Words that read the same in both languages, wherever they appear.
SAME_IN_BOTH = frozenset(
    {
        "EN",  # the language switch
        "RU",
        "°C",
        "ppm",  # what a Russian engineer reads (rather than млн⁻¹)
        "PM2.5",
        "CO₂",
        "MQTT",
        "Smart",  # the centre's name: Smart City Lab
        "City",
        "Lab",
        "UTC",  # time zones are written so in Russian too: UTC, UTC+0300
    }
)
LATIN = re.compile(r"[A-Za-z]")
UTC_OFFSET = re.compile(r"^UTC[+-]\d{2}:?\d{2}$")
CYRILLIC = re.compile(r"[А-Яа-яЁё]")
# A word: what lies between spaces and punctuation (hyphens, dots and digits stay inside, so
# that a kit id or a code such as `in-pool` is one word).
WORD = re.compile(r"[^\s,;:()\[\]{}«»\"'!?·=✓✗●⚠…/]+")


def visible_text(page) -> list[tuple[str, str]]:
    """(text, where it is) of everything a person reads on the page."""
    return [(text, where) for text, where in page.evaluate(VISIBLE_TEXT_JS)]


def untranslated(
    texts: Iterable[tuple[str, str]], language: str, allowed: Iterable[str] = ()
) -> list[str]:
    """The pieces of `texts` ((text, where) pairs) a reader of `language` would find in the
    other language: Latin words (not allowed proper names) on a Russian page, Cyrillic ones
    on an English page."""
    names = SAME_IN_BOTH | set(allowed)
    found: list[str] = []
    for text, where in texts:
        for word in WORD.findall(text):
            word = word.strip(".-–—")
            foreign = (
                LATIN.search(word) and word not in names and not UTC_OFFSET.match(word)
                if language == "ru"
                else None
            )
            if foreign or (language != "ru" and CYRILLIC.search(word)):
                found.append(f"{word!r} in {text[:80]!r} ({where})")
    return sorted(set(found))
