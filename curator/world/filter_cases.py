"""A labelled set of healthy and degenerate captions: the test set the caption filters are judged on.

Healthy captions are true descriptions of synthetic scenes (`describe()` in its styles, plus plain prose
sentences), in three lengths: short (1-2 objects), long (3-5 objects) and very long (6-8 objects, several
styles in one caption, ~150-400 words) — templated text that repeats phrases like "is left of the" dozens of
times without being a loop. Each defect is made from a healthy caption by one corruption, so defects span the
same lengths:

  loop        a fragment of 1-8 words repeated to the end (no sentence break inside it)   → ngram
  repeat      an earlier sentence (or block of sentences) said again                      → repetition
  truncated   cut mid-sentence, generation stopped at max_new_tokens                      → truncation
  charset     decoder garbage: U+FFFD, control characters, mojibake, a foreign-script run → charset
  stub        empty or near-empty (0-4 words)                                             → length
  template    one generic text on 2-8% of the images of a round (collapse)                → template

Deterministic by seed; no randomness outside `random.Random(f"...|{seed}|...")`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from curator.world.synthetic import WorldConfig, describe, sample_scene

HEALTHY = ("short", "long", "very_long")
DEFECTS = {"loop": "ngram", "repeat": "repetition", "truncated": "truncation", "charset": "charset",
           "stub": "length", "template": "template"}   # defect → the filter whose own defect it is

_CFG = WorldConfig(max_objects=8, word_prob=0.4)
_PROSE = (
    "The image shows {n} shapes on a plain light gray background.",
    "It is a flat graphic — no shading, no texture, no shadows.",
    "The shapes are drawn with clean, sharp edges on a “paper-like” backdrop.",
    "Overall the layout is sparse and evenly spaced across a 3×3 grid…",
    "Nothing else is visible in the scene.",
    "Each shape is filled with a single solid color.",
    "The composition looks like a children’s puzzle or a simple icon sheet.",
)
_GENERIC = (
    "The image shows a simple geometric shape on a plain background.",
    "A colorful shape is displayed in the center of a gray image.",
    "This is an image of some shapes.",
)
_STUBS = ("", ".", "A", "The image.", "circle", "A red circle.", "Yes", "shapes on gray", "An image of")
_LOOP_BANK = ("and", "the the", "circle", "is left of the", "and a red circle", "the square is above the",
              "very very", "of the image of the")
_GARBAGE = ("\ufffd", "\ufffd\ufffd", "\x00", "\x1b[0m", "\x07", "â€™", "â€œ", "Ã©", "Ã¨Ã©",
            "æ–‡å—", "文字化け", "Привет", "\x80\x81", "Ð¿Ñ€Ð¸")


@dataclass
class Case:
    text: str
    finish_reason: str      # "eos" | "length" — what the engine reported
    label: str              # "short" | "long" | "very_long" (healthy) or a key of DEFECTS
    image_id: str

    @property
    def healthy(self) -> bool:
        return self.label in HEALTHY


def _sentences(text: str) -> list[str]:
    return [s.strip() + "." for s in text.split(".") if s.strip()]


def _dedupe(sents: list[str]) -> str:
    """Join sentences, dropping any that repeats an earlier one (case-insensitive): healthy never repeats."""
    seen, out = set(), []
    for s in sents:
        for part in _sentences(s) if "." in s else [s]:
            key = part.strip().rstrip(".").strip().lower()
            if key and key not in seen:
                seen.add(key)
                out.append(part)
    return " ".join(out)


def healthy_caption(rng: random.Random, size: str) -> str:
    lo, hi = {"short": (1, 2), "long": (3, 5), "very_long": (6, 8)}[size]
    meta = sample_scene(rng, _CFG, min_objects=lo)
    while len(meta["objects"]) > hi:
        meta = sample_scene(rng, _CFG, min_objects=lo)
    n = len(meta["objects"])
    if size == "short":
        # no "ocr" style: "there is no text in the image." is the OCR specialist's right answer on most images,
        # a legitimate duplicate the template filter is not run on (it judges one kind of caption at a time)
        return describe(meta, rng.choice(["detailed", "detailed", "spatial", "grounded"]))
    if size == "long":
        style = rng.choice(["detailed", "detailed", "spatial", "grounded"])
        parts = [describe(meta, style)]
        if rng.random() < 0.5:
            parts.insert(0, _PROSE[0].format(n=n))
        return _dedupe(parts)
    prose = rng.sample(_PROSE[1:], rng.randint(2, 4))
    parts = [_PROSE[0].format(n=n), describe(meta, "detailed"), prose[0], describe(meta, "spatial"), *prose[1:],
             describe(meta, "grounded")]
    if meta.get("word"):
        parts.append(describe(meta, "ocr"))
    return _dedupe(parts)


def _loop(rng: random.Random, base: str) -> str:
    w = base.replace(".", "").split()
    prefix = base.split()[: rng.randint(0, int(0.6 * len(base.split())))]
    if rng.random() < 0.5 and len(w) > 8:
        i = rng.randrange(0, len(w) - 8)
        frag = w[i:i + rng.randint(1, 8)]
    else:
        frag = rng.choice(_LOOP_BANK).split()
    share = rng.uniform(0.3, 0.9)                       # the loop's share of the caption's words
    n_loop = max(4 * len(frag), 24, min(int(len(prefix) * share / (1 - share)), 600 - len(prefix)))
    loop = (frag * (n_loop // len(frag) + 1))[:n_loop]
    return " ".join(prefix + loop)


def _repeat(rng: random.Random, base: str) -> str:
    s = _sentences(base)
    if len(s) < 2:
        s = s + ["The background is plain."]
    i = rng.randrange(len(s) - 1)
    block = s[i:i + rng.randint(1, min(3, len(s) - i))]
    j = rng.randint(i + len(block), len(s))
    again = [b.lower() if rng.random() < 0.3 else b for b in block]
    return " ".join(s[:j] + again + s[j:])


def _truncate(rng: random.Random, base: str) -> str:
    w = base.split()
    cut = rng.randint(max(1, len(w) // 4), max(1, len(w) - 1))
    text = " ".join(w[:cut])
    return text.rstrip(".") if rng.random() < 0.8 else text


def _garble(rng: random.Random, base: str) -> str:
    w = base.split(" ")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(w) + 1)
        g = rng.choice(_GARBAGE)
        if rng.random() < 0.5 and i < len(w):
            w[i] = w[i] + g                              # glued to a word, as decoders leave it
        else:
            w.insert(i, g)
    return " ".join(w)


def labelled_captions(n: int = 300, seed: int = 0) -> list[Case]:
    """`n` captions of each healthy size and of each defect except template collapse, whose three generic texts
    cover 2%, 4% and 8% of the set's images (one caption per image, all of one kind)."""
    cases: list[Case] = []

    def rng_for(label: str, i: int) -> random.Random:
        return random.Random(f"filter-cases|{seed}|{label}|{i}")

    for size in HEALTHY:
        for i in range(n):
            cases.append(Case(healthy_caption(rng_for(size, i), size), "eos", size, ""))
    corrupt = {"loop": _loop, "repeat": _repeat, "truncated": _truncate, "charset": _garble}
    for label, fn in corrupt.items():
        for i in range(n):
            rng = rng_for(label, i)
            base = healthy_caption(rng, HEALTHY[i % 3])
            fr = "length" if label == "truncated" or (label == "loop" and rng.random() < 0.7) else "eos"
            cases.append(Case(fn(rng, base), fr, label, ""))
    for i in range(n):
        cases.append(Case(rng_for("stub", i).choice(_STUBS), "eos", "stub", ""))
    total = int(len(cases) / (1 - 0.14))
    for text, share in zip(_GENERIC, (0.02, 0.04, 0.08)):
        cases += [Case(text, "eos", "template", "") for _ in range(max(6, round(share * total)))]
    for i, c in enumerate(cases):
        c.image_id = f"img{seed}-{i:07d}"
    return cases
