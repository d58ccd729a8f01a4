"""Graders for the synthetic world: parse captions into facts with the world's closed vocabulary and
check them against ground truth. Used by `curator eval`, the round report and the FiftyOne view.

How facts are counted (documented in docs/readme/world.md):
- An object mention is a shape word with the size/color adjectives right before it, an optional
  `at|in|on the <position>` and an optional `[x0,y0,x1,y1]` box after it. Mentions of one shape that
  do not contradict each other are merged first ("a red circle … the circle is left of …" is one
  object), so repeating a sentence never adds facts. Each merged mention states one fact per part it
  names: the object exists (shape) + color + size + position.
- Mentions are matched one-to-one to ground-truth objects OF THE SAME SHAPE, maximising the number of
  true attributes. An unmatched mention (more circles than the image has) states only false facts.
- A relation `A is left of|right of|above|below B` is one fact, true when the objects matched to A and
  B stand in that relation on the 3×3 grid (column / row order). "right of" and "below" are stored
  as the swapped "left of" / "above", so a pair stated both ways counts once.
- The rendered word: each distinct word named (a world word anywhere, or any "quoted" token) is a
  fact, true if it is the image's word; a position attached to the word is a fact too.
- Truth (for recall): 4 facts per object (shape, color, size, position), 2 for the word (text,
  position), 1 per object pair (recalled when any true relation between the two is stated).
- Empty / nothing gradeable: precision is None (undefined), recall 0. Aggregates average precision
  over captions that state something, and count those captions as 0 in F1 and precision×recall.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from curator.errors import InputError
from curator.world.synthetic import ALL_SHAPES, ALL_WORDS, COLOR_RGB, NAME_LIST, NO_WORD_ANSWER, POSITIONS, SIZES, to_1000

_SHAPES = set(ALL_SHAPES)
_PLURALS = {s + ("es" if s.endswith("s") else "s"): s for s in ALL_SHAPES}
_COLORS = set(COLOR_RGB)
_SIZES = set(SIZES)
_WORDS = set(ALL_WORDS)
_NAMES = set(NAME_LIST)
_ROW = {"top": "top", "upper": "top", "middle": "middle", "center": "middle", "centre": "middle",
        "bottom": "bottom", "lower": "bottom"}
_COL = {"left": "left", "center": "center", "centre": "center", "middle": "center", "right": "right"}
_POS_WORDS = set(_ROW) | set(_COL)
_PREPS = {"at", "in", "on"}
_SKIP_IN_PHRASE = {",", "and"}  # "a large, red circle"
_BOX_RE = r"\[\s*\d{1,4}\s*,\s*\d{1,4}\s*,\s*\d{1,4}\s*,\s*\d{1,4}\s*\]"
_TOKEN_RE = re.compile(rf"(?P<box>{_BOX_RE})|[\"“”](?P<quoted>[a-z]+)[\"“”]|(?P<word>[a-z]+|\d+)|(?P<end>[.!?;\n])|(?P<comma>,)")
_HEADER_RE = re.compile(r"^\s*#+\s*(short|long)\s+description\s*:?\s*$", re.I | re.M)


def _position_name(row: str, col: str) -> str:
    return "center" if (row, col) == ("middle", "center") else f"{row} {col}"


@dataclass
class Mention:
    shape: str
    color: str | None = None
    size: str | None = None
    position: str | None = None
    box: list | None = None

    def phrase(self) -> str:
        words = [w for w in (self.size, self.color, self.shape) if w]
        s = " ".join(words)
        return s + (f" at the {self.position}" if self.position else "")

    def compatible(self, other: "Mention") -> bool:
        return self.shape == other.shape and all(
            a is None or b is None or a == b
            for a, b in ((self.color, other.color), (self.size, other.size), (self.position, other.position)))

    def absorb(self, other: "Mention") -> None:
        self.color = self.color or other.color
        self.size = self.size or other.size
        self.position = self.position or other.position
        self.box = self.box or other.box


@dataclass
class WordMention:
    text: str
    position: str | None = None
    box: list | None = None


@dataclass
class Parsed:
    mentions: list = field(default_factory=list)     # merged Mention objects
    words: list = field(default_factory=list)        # WordMention, one per distinct text
    relations: list = field(default_factory=list)    # (mention_idx_a, "left of"|"above", mention_idx_b), distinct
    raw_mentions: int = 0


def _tokens(text: str):
    for m in _TOKEN_RE.finditer(text.lower()):
        if m.group("box"):
            yield ("box", [int(v) for v in re.findall(r"\d+", m.group("box"))])
        elif m.group("quoted"):
            yield ("quoted", m.group("quoted"))
        elif m.group("word"):
            yield ("w", m.group("word"))
        elif m.group("end"):
            yield ("end", None)
        else:
            yield ("comma", ",")


def _sentences(text: str):
    cur = []
    for t in _tokens(text):
        if t[0] == "end":
            if cur:
                yield cur
            cur = []
        else:
            cur.append(t)
    if cur:
        yield cur


def _parse_position(toks, i):
    """At toks[i] (after a preposition): [the] pos-word [pos-word] → (position, next index) or None."""
    j = i
    if j < len(toks) and toks[j] == ("w", "the"):
        j += 1
    words = []
    while j < len(toks) and toks[j][0] == "w" and toks[j][1] in _POS_WORDS and len(words) < 2:
        words.append(toks[j][1])
        j += 1
    if not words:
        return None
    # "on the left of the square" is a relation, not a position
    if words[-1] in ("left", "right") and j < len(toks) and toks[j] == ("w", "of"):
        k = j + 1 + (1 if j + 1 < len(toks) and toks[j + 1] == ("w", "the") else 0)
        if not (k < len(toks) and toks[k][0] == "w" and toks[k][1] in ("image", "picture", "frame", "photo")):
            return None
    if len(words) == 1:
        w = words[0]
        if w in ("left", "right"):
            return _position_name("middle", w), j
        if w in ("top", "upper", "bottom", "lower"):
            return _position_name(_ROW[w], "center"), j
        return "center", j
    a, b = words
    if a in _ROW and b in _COL and not (a in ("center", "centre") and b in ("center", "centre", "middle")):
        return _position_name(_ROW[a], _COL[b]), j
    if b in _ROW and a in _COL:  # "left top", "left middle"
        return _position_name(_ROW[b], _COL[a]), j
    return _position_name(_ROW.get(a, "middle"), _COL.get(b, "center")), j


def _parse_relation(toks, i):
    """Relation words at toks[i] → (canonical relation as written, next index) or None."""
    def w(k):
        return toks[k][1] if k < len(toks) and toks[k][0] == "w" else None
    j = i
    if w(j) == "to" and w(j + 1) == "the" and w(j + 2) in ("left", "right") and w(j + 3) == "of":
        return f"{w(j + 2)} of", j + 4
    if w(j) in ("left", "right") and w(j + 1) == "of":
        return f"{w(j)} of", j + 2
    if w(j) in ("above", "over"):
        return "above", j + 1
    if w(j) in ("below", "under", "beneath", "underneath"):
        return "below", j + 1
    return None


def parse_caption(text: str) -> Parsed:
    """Facts a caption states, in the world's closed vocabulary (see the module docstring): read each sentence
    into raw mentions, word mentions and relations, then merge what refers to the same thing."""
    text = _HEADER_RE.sub("\n", text or "")
    raw: list[Mention] = []
    word_mentions: list[WordMention] = []
    rel_raw: list[tuple] = []  # (raw_idx_a, rel, raw_idx_b)
    for toks in _sentences(text):
        _read_sentence(toks, raw, word_mentions, rel_raw)
    merged, where = _merge_mentions(raw)
    return Parsed(mentions=merged, words=_merge_words(word_mentions), relations=_canonical_relations(rel_raw, where),
                  raw_mentions=len(raw))


def _read_sentence(toks: list, raw: list, word_mentions: list, rel_raw: list) -> None:
    """One sentence's tokens → appends object mentions to `raw`, words to `word_mentions`, relations (raw
    indices) to `rel_raw`. Adjectives gather until a shape noun takes them ("a large red circle") or, after
    a noun, they are predicative ("the circle is red"); a position after at/in/on goes to the latest entity
    (or to the next one when none came yet); relation words link the sentence's subject to the next noun."""
    last = None            # last entity (Mention or WordMention) in this sentence
    last_obj = None        # raw index of the last object mention
    subject = None         # raw index of the relation subject
    pending_rels: list[str] = []  # "left of and above the square" → two relations
    pending_pos = None     # "at the top left, there is a red circle"
    adjs: list[str] = []
    i = 0
    while i < len(toks):
        kind, val = toks[i]
        if kind == "w" and (val in _COLORS or val in _SIZES):
            adjs.append(val)
            i += 1
            continue
        if kind == "comma" or (kind == "w" and val == "and" and adjs):
            i += 1
            continue
        if kind == "w" and (val in _SHAPES or val in _PLURALS):
            m = Mention(shape=_PLURALS.get(val, val))
            _give_adjectives(m, adjs, overwrite=True)  # the adjective nearest the noun wins on conflicts
            adjs = []
            if pending_pos:
                m.position, pending_pos = pending_pos, None
            raw.append(m)
            idx = len(raw) - 1
            if pending_rels and subject is not None:
                rel_raw.extend((subject, rel, idx) for rel in pending_rels)
                pending_rels = []
            else:
                subject = idx
            last, last_obj = m, idx
            i += 1
            continue
        if adjs and isinstance(last, Mention) and last is raw[-1]:
            _give_adjectives(last, adjs, overwrite=False)
        adjs = []
        if kind == "box":
            if last is not None and last.box is None:
                last.box = val
            i += 1
            continue
        if kind == "quoted" or (kind == "w" and val in _WORDS):
            wm = WordMention(text=val)
            if pending_pos:
                wm.position, pending_pos = pending_pos, None
            word_mentions.append(wm)
            last = wm
            i += 1
            continue
        if kind == "w" and val in _PREPS:
            got = _parse_position(toks, i + 1)
            if got:
                pos, i = got
                if last is not None and last.position is None:
                    last.position = pos
                elif last is None:
                    pending_pos = pos
                continue
        if kind == "w":
            got = _parse_relation(toks, i)
            if got:
                rel, i = got
                if last_obj is not None:
                    subject = subject if subject is not None else last_obj
                    pending_rels.append(rel)
                continue
        i += 1
    if adjs and isinstance(last, Mention) and raw and last is raw[-1]:
        _give_adjectives(last, adjs, overwrite=False)


def _give_adjectives(m: Mention, adjs: list[str], overwrite: bool) -> None:
    """Color and size words to a mention: before its noun the later word wins (`overwrite`); predicative
    words ("is red") only fill what the mention has not stated."""
    for a in adjs:
        attr = "color" if a in _COLORS else "size"
        if overwrite or getattr(m, attr) is None:
            setattr(m, attr, a)


def _merge_mentions(raw: list[Mention]) -> tuple[list[Mention], list[int]]:
    """Mentions of one shape that do not contradict each other are one object (repetition and back-references
    add no facts). Returns the merged mentions and, per raw mention, the index of its merged one."""
    merged: list[Mention] = []
    where = []
    for m in raw:
        for k, e in enumerate(merged):
            if e.compatible(m):
                e.absorb(m)
                where.append(k)
                break
        else:
            merged.append(Mention(m.shape, m.color, m.size, m.position, m.box))
            where.append(len(merged) - 1)
    return merged, where


def _canonical_relations(rel_raw: list[tuple], where: list[int]) -> list[tuple]:
    """Relations between merged mentions, distinct, written as "left of" / "above" ("B right of A" = "A left of B")."""
    rels = []
    for a, rel, b in rel_raw:
        a, b = where[a], where[b]
        if rel == "right of":
            a, b, rel = b, a, "left of"
        elif rel == "below":
            a, b, rel = b, a, "above"
        if (a, rel, b) not in rels:
            rels.append((a, rel, b))
    return rels


def _merge_words(word_mentions: list[WordMention]) -> list[WordMention]:
    """One WordMention per distinct text; a later mention fills a missing position or box."""
    words: list[WordMention] = []
    for wm in word_mentions:
        same = [w for w in words if w.text == wm.text]
        if same:
            same[0].position = same[0].position or wm.position
            same[0].box = same[0].box or wm.box
        else:
            words.append(WordMention(wm.text, wm.position, wm.box))
    return words


# ---------------------------------------------------------------------------------------------
# Truth and matching
# ---------------------------------------------------------------------------------------------

def truth_from_meta(meta) -> dict | None:
    """A synthetic image's meta (dict or JSON string) as grader truth, or None when it holds no ground
    truth (a folder/HF image's meta: aliases, original mode) — callers skip grading those."""
    import json
    if isinstance(meta, str):
        meta = json.loads(meta) if meta.strip() else {}
    if not isinstance(meta, dict) or "objects" not in meta:
        return None
    if all("cell" in o for o in meta["objects"]):
        return meta
    meta = dict(meta)  # hand-written truth with positions only: derive cells, never mutate the caller's dict
    meta["objects"] = [dict(o, cell=list(_cell_of(o["position"]))) if "cell" not in o else o for o in meta["objects"]]
    return meta


def _require_truth(truth) -> dict:
    t = truth_from_meta(truth)
    if t is None:
        got = sorted(truth) if isinstance(truth, dict) else type(truth).__name__
        raise InputError("ground truth has no 'objects'", f"got {got}",
                         "pass a synthetic image's meta or an eval item (truth_from_meta returns None for others)")
    return t


def _cell_of(position: str):
    if position not in POSITIONS:
        raise InputError(f"unknown position {position!r}", f"positions are {list(POSITIONS)}", "fix the truth")
    k = POSITIONS.index(position)
    return divmod(k, 3)


def _attr_score(m: Mention, o: dict) -> int:
    return sum(1 for a in ("color", "size", "position") if getattr(m, a) is not None and getattr(m, a) == o[a])


def match_mentions(mentions: list, objects: list) -> dict:
    """One-to-one mention → object index, same shape only, maximising true attributes."""
    match = {}
    for shape in {m.shape for m in mentions}:
        mi = [k for k, m in enumerate(mentions) if m.shape == shape]
        oi = [k for k, o in enumerate(objects) if o["shape"] == shape]
        if not oi:
            continue
        best, best_score = None, -1
        if len(mi) <= 7:
            # exhaustive over assignments (≤ 4 objects per image keeps this tiny)
            if len(mi) <= len(oi):
                cands = (list(zip(mi, p)) for p in itertools.permutations(oi, len(mi)))
            else:
                cands = (list(zip(p, oi)) for p in itertools.permutations(mi, len(oi)))
            for pairs in cands:
                s = sum(_attr_score(mentions[a], objects[b]) for a, b in pairs)
                if s > best_score:
                    best, best_score = pairs, s
        else:  # pathological caption with many same-shape mentions: greedy
            scored = sorted(((-_attr_score(mentions[a], objects[b]), a, b) for a in mi for b in oi))
            best, used_m, used_o = [], set(), set()
            for _, a, b in scored:
                if a not in used_m and b not in used_o:
                    best.append((a, b))
                    used_m.add(a)
                    used_o.add(b)
        match.update(dict(best))
    return match


def _holds(objects, a: int, rel: str, b: int) -> bool:
    ca, cb = objects[a]["cell"], objects[b]["cell"]
    if rel == "left of":
        return ca[1] < cb[1]
    if rel == "above":
        return ca[0] < cb[0]
    raise ValueError(f"unsupported relation {rel!r}; choose 'left of' or 'above'")


def grade_caption(text: str, truth: dict) -> dict:
    """Precision/recall of the facts a caption states against one image's ground truth.

    Returns precision (None when nothing gradeable is stated), recall, f1, n_stated, n_true_stated,
    n_truth, n_recalled, per-kind counts (`by_kind`), `hallucinated` (readable strings of the false
    facts) and length_words (whitespace words of the raw text)."""
    truth = _require_truth(truth)
    objs = truth["objects"]
    p = parse_caption(text)
    match = match_mentions(p.mentions, objs)
    kinds = {k: {"stated": 0, "true": 0, "truth": 0, "recalled": 0} for k in ("object", "relation", "word")}
    hall = []

    recalled_attrs = set()  # (obj_idx, attr)
    for k, m in enumerate(p.mentions):
        o_idx = match.get(k)
        o = objs[o_idx] if o_idx is not None else None
        kinds["object"]["stated"] += 1  # the object (shape) exists
        if o is not None:
            kinds["object"]["true"] += 1
            recalled_attrs.add((o_idx, "shape"))
        else:
            hall.append(f"no such object: {m.phrase()}")
        for attr in ("color", "size", "position"):
            v = getattr(m, attr)
            if v is None:
                continue
            kinds["object"]["stated"] += 1
            if o is not None and o[attr] == v:
                kinds["object"]["true"] += 1
                recalled_attrs.add((o_idx, attr))
            elif o is not None:
                hall.append(f"{m.phrase()}: {attr} is {o[attr]}, not {v}")
    kinds["object"]["truth"] = 4 * len(objs)
    kinds["object"]["recalled"] = len(recalled_attrs)

    recalled_pairs = set()
    for a, rel, b in p.relations:
        kinds["relation"]["stated"] += 1
        oa, ob = match.get(a), match.get(b)
        if oa is not None and ob is not None and oa != ob and _holds(objs, oa, rel, ob):
            kinds["relation"]["true"] += 1
            recalled_pairs.add(frozenset((oa, ob)))
        else:
            hall.append(f"false relation: {p.mentions[a].phrase()} {rel} {p.mentions[b].phrase()}")
    kinds["relation"]["truth"] = len(objs) * (len(objs) - 1) // 2
    kinds["relation"]["recalled"] = len(recalled_pairs)

    tw, tpos = truth.get("word"), truth.get("word_position")
    positions_stated = []
    for w in p.words:
        kinds["word"]["stated"] += 1
        if w.text == tw:
            kinds["word"]["true"] += 1
        else:
            hall.append(f'word "{w.text}" is not written' + (f' (the word is "{tw}")' if tw else " (no text)"))
        if w.position and w.position not in positions_stated:
            positions_stated.append(w.position)
    for pos in positions_stated:
        kinds["word"]["stated"] += 1
        if tw and pos == tpos:
            kinds["word"]["true"] += 1
        else:
            hall.append(f"no text at the {pos}" + (f" (it is at the {tpos})" if tw else ""))
    if tw:
        kinds["word"]["truth"] = 2
        kinds["word"]["recalled"] = int(any(w.text == tw for w in p.words)) + int(tpos in positions_stated)

    n_stated = sum(k["stated"] for k in kinds.values())
    n_true = sum(k["true"] for k in kinds.values())
    n_truth = sum(k["truth"] for k in kinds.values())
    n_rec = sum(k["recalled"] for k in kinds.values())
    precision = n_true / n_stated if n_stated else None
    recall = n_rec / n_truth if n_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_stated": n_stated, "n_true_stated": n_true,
            "n_truth": n_truth, "n_recalled": n_rec, "hallucinated": hall, "by_kind": kinds,
            "length_words": len((text or "").split())}


# ---------------------------------------------------------------------------------------------
# VQA, grounding, aggregate
# ---------------------------------------------------------------------------------------------

_NUMBERS = {"zero": "0", "no": "0", "none": "none", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_DROP = {"a", "an", "the", "at", "in", "on", "it", "is", "of", "image", "object", "objects", "there", "are", "word"}


def normalize_answer(s: str) -> str:
    """Lower case, hyphens to spaces, punctuation/quotes and articles dropped, number words → digits."""
    s = (s or "").lower().replace("-", " ")
    toks = re.findall(r"[a-z]+|\d+", s)
    out = [t for t in toks if t not in _DROP]
    return " ".join(out)


def grade_vqa(answer: str, item: dict) -> bool:
    """Is a free-text answer to an eval VQA item right? yes/no: the first word decides; counts accept
    digits or number words; other answers must match after normalize_answer (so "the top-left." and
    "top left" agree, but "top" does not)."""
    gold = normalize_answer(item["answer"])
    pred = normalize_answer(answer)
    if gold in ("yes", "no"):
        first = re.findall(r"[a-z]+", (answer or "").lower())
        return bool(first) and first[0] == gold
    if gold.isdigit() or item.get("skill") == "count":
        toks = pred.split()
        pred_num = next((_NUMBERS.get(t, t) for t in toks if t.isdigit() or t in _NUMBERS), None)
        return pred_num == gold
    if gold in POSITIONS or item.get("skill") == "position":
        got = _parse_position([("w", t) for t in pred.split()], 0)
        return got is not None and got[0] == item["answer"]
    if gold == NO_WORD_ANSWER:  # "none", "no text", "nothing" — and no world word named
        toks = pred.split()
        return not any(t in _WORDS for t in toks) and any(t in ("none", "no", "nothing") for t in toks)
    if pred == gold:
        return True
    # "red one", "a red shape": right if the only word of the gold's category in the answer is the gold
    for cat in (_COLORS, _SHAPES, _SIZES, _WORDS, _NAMES):
        if gold in cat:
            named = [_PLURALS.get(t, t) for t in pred.split() if _PLURALS.get(t, t) in cat]
            return named == [gold]
    return False


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def grounding_details(text: str, truth: dict) -> dict:
    """Boxes attached to object phrases, matched to truth objects by description (same matching as
    captions), IoU in 0–999 space. mean_iou averages over the truth objects (0 for an object with no
    matched box) AND the boxed mentions that match no object (0 each), so both missing and invented
    boxes cost."""
    truth = _require_truth(truth)
    objs = truth["objects"]
    p = parse_caption(text)
    boxed = [k for k, m in enumerate(p.mentions) if m.box is not None]
    match = match_mentions([p.mentions[k] for k in boxed], objs)
    size = truth.get("width", 64)
    ious = []
    per_object = []
    for o_idx, o in enumerate(objs):
        gt = o.get("box_1000") or [to_1000(v, size) for v in o["box"]]
        got = [boxed[k] for k, oi in match.items() if oi == o_idx]
        v = iou(p.mentions[got[0]].box, gt) if got else 0.0
        per_object.append(v)
        ious.append(v)
    n_invented = len(boxed) - len(match)
    ious += [0.0] * n_invented
    return {"mean_iou": sum(ious) / len(ious) if ious else 0.0, "per_object": per_object,
            "n_boxes": len(boxed), "n_invented": n_invented}


def grade_grounding(text: str, truth: dict) -> float:
    """Mean IoU of a grounded narration's boxes against the truth (see grounding_details)."""
    return grounding_details(text, truth)["mean_iou"]


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def grade_captions(texts: dict, items: list, prefix: str = "caption_") -> dict:
    """Aggregate caption metrics over eval items; texts = {item_id: caption} (missing id = empty)."""
    rows = [grade_caption(texts.get(it["id"], ""), it) for it in items]
    stated = [r for r in rows if r["n_stated"]]
    tot = {k: {"stated": 0, "true": 0, "truth": 0, "recalled": 0} for k in ("object", "relation", "word")}
    for r in rows:
        for k, c in r["by_kind"].items():
            for f, v in c.items():
                tot[k][f] += v
    out = {
        "precision": _mean(r["precision"] for r in stated),     # macro, over captions stating something
        "precision_micro": (sum(r["n_true_stated"] for r in rows) / sum(r["n_stated"] for r in rows)
                            if any(r["n_stated"] for r in rows) else 0.0),
        "recall": _mean(r["recall"] for r in rows),
        "f1": _mean(r["f1"] for r in rows),
        "p_x_r": _mean((r["precision"] or 0.0) * r["recall"] for r in rows),
        "length_words": _mean(r["length_words"] for r in rows),
        "empty_rate": _mean(0.0 if r["n_stated"] else 1.0 for r in rows),
        "hallucinated_per_caption": _mean(len(r["hallucinated"]) for r in rows),
        # a model that ignores the image writes one caption for every image (seen in a round-0 probe)
        "distinct_rate": (len({" ".join((texts.get(it["id"]) or "").split()) for it in items}) / len(items)
                          if items else 0.0),
    }
    for k, c in tot.items():
        out[f"{k}_precision"] = c["true"] / c["stated"] if c["stated"] else 0.0
        out[f"{k}_recall"] = c["recalled"] / c["truth"] if c["truth"] else 0.0
    return {prefix + k: v for k, v in out.items()}


def grade_eval(predictions: dict, eval_items: list) -> dict:
    """Metrics dict for one model on the eval set.

    predictions = {"captions": {id: text}, "vqa": {id: [answer per item["vqa"] entry]},
    "grounding": {id: text}} (any part may be missing; a missing answer is wrong/empty).
    Keys: caption_* (see grade_captions), vqa_acc (all questions), vqa_acc_<skill>, vqa_n_<skill>,
    grounding_iou, n_eval."""
    if not isinstance(predictions, dict):
        raise InputError("predictions must be a dict", f"got {type(predictions).__name__}",
                         'pass {"captions": {...}, "vqa": {...}, "grounding": {...}}')
    metrics = {"n_eval": len(eval_items)}
    # an absent or empty part means "not asked" (predict() leaves grounding {} without a grounding prompt)
    if predictions.get("captions"):
        metrics.update(grade_captions(predictions["captions"], eval_items))
    if predictions.get("vqa"):
        per_skill: dict[str, list] = {}
        for it in eval_items:
            answers = predictions["vqa"].get(it["id"], [])
            for k, q in enumerate(it.get("vqa", [])):
                ok = k < len(answers) and grade_vqa(answers[k], q)
                per_skill.setdefault(q["skill"], []).append(ok)
        allv = [v for vs in per_skill.values() for v in vs]
        metrics["vqa_acc"] = _mean(allv)
        for s, vs in sorted(per_skill.items()):
            metrics[f"vqa_acc_{s}"] = _mean(vs)
            metrics[f"vqa_n_{s}"] = len(vs)
    if predictions.get("grounding"):
        metrics["grounding_iou"] = _mean(grade_grounding(predictions["grounding"].get(it["id"], ""), it)
                                         for it in eval_items)
    return metrics


def grade_alt_text(eval_items: list) -> dict:
    """The same caption metrics for the eval images' own alt-text: the baseline model captions must beat."""
    return grade_captions({it["id"]: it.get("alt_text", "") for it in eval_items}, eval_items)
