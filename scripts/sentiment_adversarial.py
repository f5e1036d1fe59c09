#!/usr/bin/env python3
"""Adversarial inputs for the sentiment analyzers (stdlib only, deterministic).

    python3 scripts/sentiment_adversarial.py N [SEED] > adversarial.ndjson

Random strings over the characters and fragments that the TextBlob tokenizer
and VADER treat specially: apostrophes and curly quotes, periods and
ellipses, abbreviations, blank lines with \\r\\n, emoticons split by spaces,
"(!)", emoji, non-ASCII case mappings (Kelvin sign, dotted I, final sigma,
titlecase digraphs), Python-only whitespace (U+001C..U+001F), negations,
boosters, "but", "least", idioms. Score them with scripts/sentiment_oracle.py
to get goldens.
"""
import json
import random
import sys

FRAGMENTS = [
    "good", "bad", "not", "no", "never", "very", "really", "extremely", "kind", "of", "sort", "but", "BUT",
    "least", "at", "the", "shit", "bomb", "yeah", "right", "die", "for", "without", "doubt", "so", "this",
    "happily", "terribly", "GOOD", "Bad", "LOVE", "hate", "great", "awful", "n't", "don't", "isn’t", "can't",
    "it's", "I'd", "we'll", "END-OF-SENTENCE", "Mr.", "U.S.", "e.g.", "etc.", "Ltd.", "A.", "St.", "Mrs.",
    "...", "..", ".", "!", "?", "?!", "(!)", "( ! )", "(", ")", ":", "-", ":-)", ": )", ":c)", ":o)", ": c )",
    "x D", "XD", "8 )", "< 3", "<3", "♥", "°O°", ";'(", ":'''(", ">:(", "=/", ":/", "😀", "😡", "💔", "👍🏽",
    "❤️", "1️⃣", "🇺🇸", "\u212aind of", "İ", "ΟΔΟΣ", "ǅ", "ǈOOD", "ÉTÉ", "naïve", "café", "«", "»", "“", "”",
    "‘", "’", "'", '"', "`", "*", "**", "~~", "&amp;", "&lt;3", "#", "@", "$", "_", "|", "=", "~", "^",
    "\u200b", "\u00ad", "f*cking", "sux", "lol", "lmao", "kinda", "sorta", "uber", "friggin", "FRIGGIN",
    "barely", "hardly", "nor", "or", "0", "1.5", "3.14", "10%", "$5", "w/", "a.m.", "vs.",
]
SEPARATORS = [" ", " ", " ", "", "\n", "\n\n", "\r\n", "\r\n\r\n", "\n\r\n", "\t", "\u00a0", "\u2003",
              "\u001c", "\u001f", "\u0085", "\u3000", "  ", " \n \n "]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rnd = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    for i in range(n):
        parts = []
        for _ in range(rnd.randint(0, 24)):
            w = rnd.choice(FRAGMENTS)
            c = rnd.random()
            if c < 0.1:
                w = w.upper()
            elif c < 0.15:
                w = w.capitalize()
            parts.append(w)
            parts.append(rnd.choice(SEPARATORS))
        if rnd.random() < 0.05:
            # A few purely random code points, including astral ones.
            parts.append("".join(chr(rnd.choice([rnd.randint(0x20, 0x7e), rnd.randint(0xa0, 0x2fff),
                                                 rnd.randint(0x1f300, 0x1faff)])) for _ in range(rnd.randint(1, 12))))
        print(json.dumps({"id": "adv-%06d" % i, "body": "".join(parts)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
