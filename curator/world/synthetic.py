"""The synthetic world: small images with exact ground truth, noisy web-style alt-text, and the
SFT / specialist / eval sets the VILA² loop trains and is graded on. Deterministic by seed.

Every image is drawn from its own RNG seeded by (seed, stream, index), so `iter_synthetic(n, seed)`
yields exactly the first n images of `generate_world(..., seed)`'s pretraining set, and the SFT,
task and eval sets come from other streams (never the pretraining images).

The grid: the image is split into 3×3 cells; each object sits inside one cell (one object per cell,
so positions and relations are unambiguous), and a rendered word, when present, takes a free cell.
(color, shape) pairs are distinct within an image so "the red circle" always names one object.
"""
from __future__ import annotations

import io
import json
import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageDraw, ImageFont

from curator.errors import InputError

WORLD_VERSION = 1

# Full vocabularies; a WorldConfig picks subsets. RGB values are far apart so colors stay
# distinguishable at 7 px, and none is gray/black/white (those are background and text).
COLOR_RGB = {
    "red": (220, 30, 30), "orange": (245, 140, 0), "yellow": (235, 210, 0), "green": (30, 160, 50),
    "blue": (30, 70, 220), "purple": (130, 40, 180), "pink": (245, 120, 190), "brown": (125, 75, 25),
    "cyan": (0, 190, 200),
}
ALL_SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
SIZES = ("small", "large")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
# Two-word names everywhere except the middle cell: "at the middle left" never collides with the
# relation "left of", which the grader relies on.
POSITIONS = tuple("center" if (r, c) == ("middle", "center") else f"{r} {c}" for r in ROWS for c in COLS)
RELATIONS = ("left of", "right of", "above", "below")
# Three-letter words fit a 21 px cell in Pillow's default font; none collides with any other
# vocabulary word (the grader spots them anywhere in a caption).
ALL_WORDS = ("cat", "dog", "sun", "cup", "hat", "pen", "key", "bus", "car", "egg", "fox", "owl",
             "map", "jar", "bag", "bed")
# Web alt-text says "ball" or "box" where the world says circle/square: the grader does not parse
# these, so such alt-text states nothing gradeable about the shape (weak supervision, like the web).
SHAPE_SYNONYMS = {"circle": ["ball", "dot", "ring"], "square": ["block", "tile"], "triangle": ["pyramid", "arrow"],
                  "diamond": ["gem", "rhombus"], "star": ["sparkle", "starburst"], "cross": ["plus", "x"]}
SIZE_SYNONYMS = {"small": ["tiny", "little"], "large": ["big", "huge"]}
FILLERS = ("stock photo", "free download", "image", "high quality", "vector illustration", "clipart",
           "png", "icon", "royalty free", "hd wallpaper", "on white background", "photo", "design element")

# Proper names the web knows and the SFT descriptions never say (the method keeps alt-text beside recaptions
# for such knowledge): every (color, shape) pair has one, e.g. the red star is "vorna". Off by default
# (WorldConfig.name_prob = 0); when on, alt-text names its object this often and eval VQA asks
# "What is the name of the object at the top left?" (skill `name`).
NAME_LIST = ("vorna", "kelbo", "tishu", "mavro", "quilla", "dornet", "fesko", "yalit", "brunzo", "cepha",
             "gorvi", "hulma", "jentro", "kusbi", "lopra", "mindel", "nuvik", "ospra", "pelko", "rusta",
             "selvo", "tarmin", "ubrel", "vesko", "wilda", "zanter", "abrik", "belmo", "cavri", "delvo",
             "epsor", "fildo", "grenta", "hoska", "irvel", "jorva", "kimbra", "lusko", "marvi", "nelda",
             "orvik", "pasko", "quendo", "ralva", "sorvi", "tulka", "ulmar", "vinda", "wesko", "yorvel",
             "zimba", "arlo", "benvi", "corla")
OBJECT_NAMES = {(c, s): NAME_LIST[i * len(ALL_SHAPES) + j] for i, c in enumerate(COLOR_RGB) for j, s in enumerate(ALL_SHAPES)}


def object_name(o: dict) -> str:
    """The proper name of an object (its color and shape decide it)."""
    return OBJECT_NAMES[(o["color"], o["shape"])]


# VILA² prompts, verbatim (vila2-method.md §1–2; the same texts as curator/prompts.yaml).
LONG_PROMPTS = (
    "Describe the image in details.",
    "Elaborate on the visual and narrative elements of the image in detail.",
    "Instead of describing the imaginary content, only describing the content one can determine confidently "
    "from the image. Do not describe the contents by itemizing them in list form. Minimize aesthetic "
    "descriptions as much as possible.",
)
SPATIAL_PROMPTS = (
    "Elaborate on the visual and narrative elements of the image in detail, with a focus on spatial relations.",
    "Can you explain the content of the image and their spatial relations in detail?",
)
GROUNDING_PROMPT = ("Elaborate on the visual and narrative elements in the image, and specify their location "
                    "with [xmin,ymin,xmax,ymax].")
OCR_PROMPT = ("Your task is to recognize and describe the text in the image. Please provide a brief description "
              "that focuses on the textual content.")
EVAL_CAPTION_PROMPT = LONG_PROMPTS[0]
SKILLS = ("color", "shape", "size", "count", "position", "spatial", "ocr", "name")   # name: only with names on
NO_WORD_ANSWER = "none"


@dataclass
class WorldConfig:
    """Knobs of the world. Change these to make the world harder or easier; the grader reads the
    vocabulary from the config it is given (or the defaults), never from hard-coded lists."""
    image_size: int = 64                      # square images, px; the tiny model sees 64×64
    min_objects: int = 1                      # objects per image, inclusive range
    max_objects: int = 4
    shapes: tuple = ("circle", "square", "triangle", "diamond", "star")   # subset of ALL_SHAPES
    colors: tuple = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")  # keys of COLOR_RGB
    small_side: tuple = (0.11, 0.16)          # side of a small object's box, as a fraction of image_size
    large_side: tuple = (0.22, 0.30)          # large: must stay below 1/3 so the box fits its cell
    words: tuple = ALL_WORDS[:12]             # closed word list for rendered text (OCR)
    word_prob: float = 0.3                    # share of images with a rendered word
    background_gray: tuple = (215, 255)       # background gray level range (varies per image)
    # Alt-text noise (web-style; the alt-text never states a position, so it is never a full fact set):
    alt_filler_only: float = 0.1              # alt-text is filler alone ("stock photo"), names nothing
    alt_shape_synonym: float = 0.15           # "ball" instead of "circle" (not gradeable)
    alt_color_missing: float = 0.3            # color not mentioned
    alt_wrong_color: float = 0.3              # of the mentioned colors, share that is wrong
    alt_size: float = 0.3                     # size mentioned at all
    alt_wrong_size: float = 0.3               # of the mentioned sizes, share that is wrong
    alt_word: float = 0.4                     # for images with a word: share whose alt-text quotes it
    alt_wrong_word: float = 0.25              # of the quoted words, share that is wrong
    alt_filler: float = 0.8                   # a filler phrase is added
    name_prob: float = 0.0                    # alt-text naming an object also gives its proper name ("vorna the
                                              # red star"); > 0 adds the eval VQA skill `name` (off by default)
    sft_name_prob: float = 0.2                # with names on: share of SFT images with one name question (teaches
                                              # the question's form; the SFT descriptions never say names)
    # Emitted sets:
    sft_fraction: float = 0.3                 # SFT images = round(sft_fraction × n_pretrain), ≥ 1 (0.1: blind round 0)
    sft_vqa_turns: int = 3                    # VQA turns in each SFT image's VQA sample
    task_fraction: float = 0.1                # images per specialist task set, × n_pretrain
    task_ocr_word_prob: float = 0.9           # the OCR task set is mostly images with words
    n_eval: int = 200                         # held-out eval images
    eval_ocr_none_prob: float = 0.3           # eval images without a word still get an OCR question this often
    png_compress_level: int = 6               # zlib level for PNGs (bytes are deterministic at any level)

    def __post_init__(self):
        self.shapes, self.colors, self.words = tuple(self.shapes), tuple(self.colors), tuple(self.words)
        self.small_side, self.large_side = tuple(self.small_side), tuple(self.large_side)
        self.background_gray = tuple(self.background_gray)
        fix = "fix the WorldConfig field (see examples/synthetic_world.yaml)"
        for name, allowed in (("shapes", ALL_SHAPES), ("colors", tuple(COLOR_RGB)), ("words", ALL_WORDS)):
            vals = getattr(self, name)
            bad = [v for v in vals if v not in allowed]
            if bad or not vals or len(set(vals)) != len(vals):
                raise InputError(f"WorldConfig.{name}={list(vals)!r} is invalid",
                                 f"values must be distinct, non-empty and from {list(allowed)}", fix)
        if not 32 <= self.image_size <= 1024:
            raise InputError(f"WorldConfig.image_size={self.image_size} is out of range", "it must be 32..1024", fix)
        cells_free = 9 - (1 if self.word_prob > 0 or self.task_ocr_word_prob > 0 else 0)
        if not 1 <= self.min_objects <= self.max_objects <= min(cells_free, len(self.shapes) * len(self.colors)):
            raise InputError(f"WorldConfig objects range {self.min_objects}..{self.max_objects} is invalid",
                             f"need 1 <= min <= max <= {min(cells_free, len(self.shapes) * len(self.colors))} "
                             "(one object per grid cell, one cell kept for the word, distinct color+shape)", fix)
        for name in ("small_side", "large_side"):
            lo, hi = getattr(self, name)
            if not 0.05 <= lo <= hi < 1 / 3:
                raise InputError(f"WorldConfig.{name}={(lo, hi)} is invalid",
                                 "need 0.05 <= lo <= hi < 1/3 so a box fits inside its grid cell", fix)
        for f in fields(self):
            v = getattr(self, f.name)
            if (f.name.startswith("alt_") or f.name.endswith("_prob") or f.name.endswith("_fraction")) \
                    and not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise InputError(f"WorldConfig.{f.name}={v!r} is invalid", "it is a probability/fraction in [0, 1]", fix)
        if self.n_eval < 0 or self.sft_vqa_turns < 0:
            raise InputError("WorldConfig.n_eval and sft_vqa_turns must be >= 0",
                             f"got n_eval={self.n_eval}, sft_vqa_turns={self.sft_vqa_turns}", fix)

    @classmethod
    def from_dict(cls, d: dict | None) -> "WorldConfig":
        """Build from a dict (YAML/JSON); unknown keys fail loudly instead of being ignored."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown WorldConfig keys {unknown}", f"known keys: {sorted(known)}",
                             "remove or rename them (see examples/synthetic_world.yaml)")
        return cls(**d)


@dataclass
class WorldPaths:
    """Where generate_world wrote each set (all paths absolute)."""
    root: Path
    pretrain_manifest: Path
    sft: Path                                   # sft/data.json
    tasks: dict = field(default_factory=dict)   # {"spatial"|"grounding"|"ocr": tasks/<name>/data.json}
    eval: Path = None                           # eval/eval.json
    world_json: Path = None
    counts: dict = field(default_factory=dict)


TASKS = ("spatial", "grounding", "ocr")   # the specialist task sets a world writes, in order


def config_dict(cfg: WorldConfig) -> dict:
    """The config as written to world.json and used in resume keys: with names off, the name knobs are left
    out, so such a world (and what was built on it) keeps the identity it had before names existed."""
    d = asdict(cfg)
    if not cfg.name_prob:
        d.pop("name_prob"), d.pop("sft_name_prob")
    return d


def world_vocabulary(cfg: WorldConfig | None = None) -> dict:
    """The closed vocabulary the world speaks and the grader parses."""
    cfg = cfg or WorldConfig()
    return {"shapes": list(cfg.shapes), "colors": list(cfg.colors), "sizes": list(SIZES),
            "positions": list(POSITIONS), "relations": list(RELATIONS), "words": list(cfg.words),
            "all_shapes": list(ALL_SHAPES), "all_colors": list(COLOR_RGB), "all_words": list(ALL_WORDS),
            "fillers": list(FILLERS), "shape_synonyms": SHAPE_SYNONYMS, "size_synonyms": SIZE_SYNONYMS}


# ---------------------------------------------------------------------------------------------
# Scene sampling and rendering
# ---------------------------------------------------------------------------------------------

def _rng(seed: int, stream: str, i: int) -> random.Random:
    # str seeds go through sha512 in CPython, so this does not depend on PYTHONHASHSEED.
    return random.Random(f"vila2-world|{seed}|{stream}|{i}")


def _cell_edges(size: int) -> list[int]:
    return [round(k * size / 3) for k in range(4)]


def to_1000(v: float, size: int) -> int:
    """Pixel coordinate → the method's 0–999 integer box space."""
    return max(0, min(999, round(v * 999 / size)))


def box_to_1000(box, size: int) -> list[int]:
    return [to_1000(v, size) for v in box]


def format_box(box_1000) -> str:
    """`[120,080,450,400]` — zero-padded like the method's grounding examples."""
    return "[" + ",".join(f"{int(v):03d}" for v in box_1000) + "]"


_FONT = None


def _font():
    global _FONT
    if _FONT is None:
        _FONT = ImageFont.load_default()  # Pillow's bundled font: same glyphs on every machine
    return _FONT


def sample_scene(rng: random.Random, cfg: WorldConfig, word_prob: float | None = None,
                 min_objects: int | None = None) -> dict:
    """Ground truth of one image (the `meta` dict): objects in reading order, word, relations."""
    size = cfg.image_size
    edges = _cell_edges(size)
    has_word = rng.random() < (cfg.word_prob if word_prob is None else word_prob)
    lo = max(cfg.min_objects, min_objects or 1)
    n = rng.randint(min(lo, cfg.max_objects), cfg.max_objects)
    cells = rng.sample(range(9), n + (1 if has_word else 0))
    obj_cells = sorted(cells[:n])  # reading order: top-left first
    pairs = rng.sample([(c, s) for c in cfg.colors for s in cfg.shapes], n)
    objects = []
    for cell, (color, shape) in zip(obj_cells, pairs):
        r, c = divmod(cell, 3)
        sz = rng.choice(SIZES)
        lo_f, hi_f = cfg.small_side if sz == "small" else cfg.large_side
        side = max(4, round(rng.uniform(lo_f, hi_f) * size))
        cx0, cx1, cy0, cy1 = edges[c], edges[c + 1], edges[r], edges[r + 1]
        # one pixel of margin so neighbouring objects never touch
        x0 = rng.randint(cx0 + 1, max(cx0 + 1, cx1 - 1 - side))
        y0 = rng.randint(cy0 + 1, max(cy0 + 1, cy1 - 1 - side))
        box = [x0, y0, x0 + side, y0 + side]  # x1, y1 exclusive
        objects.append({"shape": shape, "color": color, "size": sz, "position": POSITIONS[cell],
                        "cell": [r, c], "box": box, "box_1000": box_to_1000(box, size)})
    word = word_pos = word_box = None
    if has_word:
        cell = cells[n]
        r, c = divmod(cell, 3)
        word = rng.choice(cfg.words)
        bx0, by0, bx1, by1 = _font().getbbox(word)
        w, h = bx1 - bx0, by1 - by0
        cx0, cx1, cy0, cy1 = edges[c], edges[c + 1], edges[r], edges[r + 1]
        tx = rng.randint(cx0, max(cx0, cx1 - w)) - bx0
        ty = rng.randint(cy0 + 1, max(cy0 + 1, cy1 - 1 - h)) - by0
        word_pos = POSITIONS[cell]
        word_box = [tx + bx0, ty + by0, tx + bx1, ty + by1]
        word_origin = [tx, ty]
    relations = []
    for i, a in enumerate(objects):
        for j, b in enumerate(objects):
            if a["cell"][1] < b["cell"][1]:
                relations.append({"a": i, "rel": "left of", "b": j})
            if a["cell"][0] < b["cell"][0]:
                relations.append({"a": i, "rel": "above", "b": j})
    meta = {"world_version": WORLD_VERSION, "width": size, "height": size, "objects": objects,
            "word": word, "word_position": word_pos, "word_box": word_box,
            "word_box_1000": box_to_1000(word_box, size) if word_box else None,
            "relations": relations,
            "background": rng.randint(*cfg.background_gray)}
    if has_word:
        meta["word_origin"] = word_origin
    return meta


def _shape_points(shape: str, box) -> list[tuple[float, float]]:
    """Polygon vertices filling the box exactly (so the box is the shape's true bounding box)."""
    x0, y0, x1, y1 = box[0], box[1], box[2] - 1, box[3] - 1
    w, h = x1 - x0, y1 - y0
    if shape == "triangle":
        unit = [(0.5, 0), (1, 1), (0, 1)]
    elif shape == "diamond":
        unit = [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]
    elif shape == "star":
        unit = _STAR_UNIT
    else:
        raise ValueError(f"unsupported polygon shape {shape!r}; choose triangle, diamond or star")
    return [(x0 + u * w, y0 + v * h) for u, v in unit]


def _make_star_unit():
    import math
    pts = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.42
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((r * math.cos(a), r * math.sin(a)))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    # stretch to the unit square so the drawn star fills its box
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in pts]


_STAR_UNIT = _make_star_unit()


def render(meta: dict, compress_level: int = 6) -> bytes:
    """PNG bytes of a scene (RGB)."""
    size = meta["width"]
    g = meta.get("background", 255)
    img = Image.new("RGB", (size, size), (g, g, g))
    d = ImageDraw.Draw(img)
    for o in meta["objects"]:
        rgb = COLOR_RGB[o["color"]]
        x0, y0, x1, y1 = o["box"]
        if o["shape"] == "circle":
            d.ellipse([x0, y0, x1 - 1, y1 - 1], fill=rgb)
        elif o["shape"] == "square":
            d.rectangle([x0, y0, x1 - 1, y1 - 1], fill=rgb)
        elif o["shape"] == "cross":
            t = max(1, round((x1 - x0) / 3))
            mx, my = (x0 + x1 - t) // 2, (y0 + y1 - t) // 2
            d.rectangle([mx, y0, mx + t - 1, y1 - 1], fill=rgb)
            d.rectangle([x0, my, x1 - 1, my + t - 1], fill=rgb)
        else:
            d.polygon(_shape_points(o["shape"], o["box"]), fill=rgb)
    if meta.get("word"):
        d.text(tuple(meta["word_origin"]), meta["word"], fill=(20, 20, 20), font=_font())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Text: alt-text and canonical descriptions
# ---------------------------------------------------------------------------------------------

def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def make_alt_text(rng: random.Random, meta: dict, cfg: WorldConfig) -> str:
    """Short noisy web-style alt-text: at most one object named, never a position (so it is never a
    complete true fact set), sometimes a wrong color/size/word, often filler."""
    filler = rng.choice(FILLERS)
    if not meta["objects"] or rng.random() < cfg.alt_filler_only:
        return filler
    o = rng.choice(meta["objects"])
    shape = rng.choice(SHAPE_SYNONYMS[o["shape"]]) if rng.random() < cfg.alt_shape_synonym else o["shape"]
    parts = []
    if rng.random() < cfg.alt_size:
        sz = o["size"]
        if rng.random() < cfg.alt_wrong_size:
            sz = "large" if sz == "small" else "small"
        parts.append(rng.choice([sz] + SIZE_SYNONYMS[sz]))
    if rng.random() >= cfg.alt_color_missing:
        color = o["color"]
        if rng.random() < cfg.alt_wrong_color:
            color = rng.choice([c for c in cfg.colors if c != color] or [color])
        parts.append(color)
    parts.append(shape)
    text = " ".join(parts)
    if cfg.name_prob > 0 and rng.random() < cfg.name_prob:
        name = object_name(o)
        text = rng.choice([f"{name} the {text}", f"{text} named {name}", f"{name}, {_article(text)}"])
    if meta.get("word") and rng.random() < cfg.alt_word:
        w = meta["word"]
        if rng.random() < cfg.alt_wrong_word:
            w = rng.choice([x for x in cfg.words if x != w] or [w])
        text += rng.choice([f' with text "{w}"', f' "{w}" sign', f' and {w} logo'])
    if rng.random() < cfg.alt_filler:
        text = f"{filler} {text}" if rng.random() < 0.5 else f"{text} {filler}"
    return text


def _ref(meta: dict, i: int) -> str:
    """Shortest unique reference: "the star" if its shape is unique, else "the red star"."""
    o = meta["objects"][i]
    same_shape = sum(1 for p in meta["objects"] if p["shape"] == o["shape"])
    return f"the {o['shape']}" if same_shape == 1 else f"the {o['color']} {o['shape']}"


def _object_sentence(o: dict, box: bool = False) -> str:
    phrase = _article(f"{o['size']} {o['color']} {o['shape']}")
    if box:
        phrase += " " + format_box(o["box_1000"])
    return f"{phrase} at the {o['position']}."


def _word_sentence(meta: dict, box: bool = False) -> str:
    b = (" " + format_box(meta["word_box_1000"])) if box else ""
    return f'the word "{meta["word"]}"{b} is written at the {meta["word_position"]}.'


def _pair_relations(meta: dict, i: int, j: int) -> list[str]:
    """All relations that hold from object i to object j, horizontal first."""
    a, b = meta["objects"][i]["cell"], meta["objects"][j]["cell"]
    out = []
    if a[1] != b[1]:
        out.append("left of" if a[1] < b[1] else "right of")
    if a[0] != b[0]:
        out.append("above" if a[0] < b[0] else "below")
    return out


def describe(meta: dict, style: str = "detailed") -> str:
    """Canonical TRUE description of a scene.

    detailed: objects, word, one relation per object pair (horizontal if the columns differ).
    spatial: objects and every relation that holds for every pair ("is left of and above").
    grounded: objects with inline [xmin,ymin,xmax,ymax] boxes in 0–999.
    ocr: the word and where it is, or that there is no text.
    """
    objs = meta["objects"]
    if style == "ocr":
        return _word_sentence(meta) if meta.get("word") else "there is no text in the image."
    if style not in ("detailed", "spatial", "grounded"):
        raise ValueError(f"unsupported description style {style!r}; choose detailed, spatial, grounded or ocr")
    if style == "grounded":
        # boxes replace the grid position; no word: keeps a 4-object narration under ~96 tokens even
        # though a byte-level BPE spends ~17 tokens per box (digits are split)
        return " ".join(_article(f"{o['size']} {o['color']} {o['shape']}") + f" {format_box(o['box_1000'])}."
                        for o in objs)
    sents = [_object_sentence(o) for o in objs]
    if meta.get("word") and style == "detailed":
        sents.append(_word_sentence(meta))
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            rels = _pair_relations(meta, i, j)
            if style == "spatial":  # every relation that holds, one sentence per pair
                sents.append(f"{_ref(meta, i)} is {' and '.join(rels)} {_ref(meta, j)}.")
            else:
                sents.append(f"{_ref(meta, i)} is {rels[0]} {_ref(meta, j)}.")
    return " ".join(sents)


def _desc(o: dict) -> str:
    return f"{o['color']} {o['shape']}"


def name_question(rng: random.Random, meta: dict) -> dict:
    o = rng.choice(meta["objects"])
    return {"question": f"What is the name of the object at the {o['position']}?", "answer": object_name(o),
            "skill": "name"}


def make_vqa(rng: random.Random, meta: dict, cfg: WorldConfig, ocr_none_prob: float = 1.0,
             names: bool = True) -> list[dict]:
    """One question per applicable skill: {"question", "answer", "skill"}; answers are short, lower case.
    With `names` and names on in the world (cfg.name_prob > 0), a last question asks an object's name."""
    objs = meta["objects"]
    qa = []
    o = rng.choice(objs)
    qa.append({"question": f"What color is the {o['shape']} at the {o['position']}?", "answer": o["color"],
               "skill": "color"})
    o = rng.choice(objs)
    qa.append({"question": f"What shape is at the {o['position']}?", "answer": o["shape"], "skill": "shape"})
    o = rng.choice(objs)
    qa.append({"question": f"Is the {_desc(o)} small or large?", "answer": o["size"], "skill": "size"})
    qa.append({"question": "How many objects are there?", "answer": str(len(objs)), "skill": "count"})
    o = rng.choice(objs)
    qa.append({"question": f"Where is the {_desc(o)}?", "answer": o["position"], "skill": "position"})
    if len(objs) >= 2:
        i, j = rng.sample(range(len(objs)), 2)
        holds = _pair_relations(meta, i, j)
        want_true = rng.random() < 0.5
        pool = holds if want_true else [r for r in RELATIONS if r not in holds]
        rel = rng.choice(pool)
        qa.append({"question": f"Is the {_desc(objs[i])} {rel} the {_desc(objs[j])}?",
                   "answer": "yes" if rel in holds else "no", "skill": "spatial"})
    if meta.get("word") or rng.random() < ocr_none_prob:
        qa.append({"question": "What word is written in the image?", "answer": meta.get("word") or NO_WORD_ANSWER,
                   "skill": "ocr"})
    if names and cfg.name_prob > 0:
        qa.append(name_question(rng, meta))
    return qa


def _spatial_qa(rng: random.Random, meta: dict) -> list[dict]:
    """Spatial specialist QA: relations between two objects, asked once with their boxes in the question (as
    the method's spatial data puts them) and once without (then the image must answer: a question with boxes
    can be answered from its numbers alone), and which object is closest."""
    objs = meta["objects"]
    out = []
    if len(objs) < 2:
        return out
    i, j = rng.sample(range(len(objs)), 2)
    holds = _pair_relations(meta, i, j)
    for n, rel in enumerate(rng.sample(RELATIONS, 2)):
        boxed = n == 0
        bi, bj = (f" {format_box(objs[k]['box_1000'])}" if boxed else "" for k in (i, j))
        out.append((f"Is the {_desc(objs[i])}{bi} {rel} the {_desc(objs[j])}{bj}?", "yes" if rel in holds else "no"))
    if len(objs) >= 3:
        k = rng.randrange(len(objs))

        def center(o):
            x0, y0, x1, y1 = o["box"]
            return (x0 + x1) / 2, (y0 + y1) / 2
        ck = center(objs[k])
        dists = sorted(((center(o)[0] - ck[0]) ** 2 + (center(o)[1] - ck[1]) ** 2, n)
                       for n, o in enumerate(objs) if n != k)
        if dists[0][0] < dists[1][0]:  # unique nearest only
            out.append((f"Which object is closest to the {_desc(objs[k])} {format_box(objs[k]['box_1000'])}?",
                        f"the {_desc(objs[dists[0][1]])}"))
    return [{"question": q, "answer": a} for q, a in out]


# ---------------------------------------------------------------------------------------------
# Public generators
# ---------------------------------------------------------------------------------------------

def synthetic_item(i: int, seed: int = 0, cfg: WorldConfig | None = None, stream: str = "pretrain",
                   word_prob: float | None = None, min_objects: int | None = None):
    """(png_bytes, alt_text, meta, rng) for image i of a stream; rng continues for derived text."""
    cfg = cfg or WorldConfig()
    rng = _rng(seed, stream, i)
    meta = sample_scene(rng, cfg, word_prob=word_prob, min_objects=min_objects)
    alt = make_alt_text(rng, meta, cfg)
    return render(meta, cfg.png_compress_level), alt, meta, rng


def iter_synthetic(n: int, seed: int = 0, cfg: WorldConfig | None = None) -> Iterator[tuple[bytes, str, dict]]:
    """The first n pretraining images of the world with this seed: (png_bytes, alt_text, meta).
    meta is the full ground truth (the grader's `truth`); `curator ingest --synthetic` stores it."""
    if n < 0:
        raise InputError(f"cannot generate {n} synthetic images", "the count must be >= 0", "pass a positive N")
    cfg = cfg or WorldConfig()
    for i in range(n):
        png, alt, meta, _ = synthetic_item(i, seed, cfg)
        yield png, alt, meta


def _conv(prompt_or_question: str, answer: str, first: bool) -> list[dict]:
    human = ("<image>\n" + prompt_or_question) if first else prompt_or_question
    return [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _prepare_out(out: Path) -> None:
    """Regenerating into an existing world directory replaces it; anything else non-empty is refused
    (we never delete files we did not write)."""
    if out.exists() and any(out.iterdir()):
        if not (out / "world.json").exists():
            raise InputError(f"output directory {out} is not empty", "it holds files that are not a synthetic world",
                             "pass an empty or new directory")
        for sub in ("pretrain", "sft", "tasks", "eval"):
            if (out / sub).exists():
                shutil.rmtree(out / sub)
        (out / "world.json").unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate_world(out_dir, n_pretrain: int = 4000, seed: int = 0, cfg: WorldConfig | None = None,
                   progress: bool = False) -> WorldPaths:
    """Write the whole world (pretraining images + alt-text manifest, SFT, task and eval sets,
    world.json). Same (n_pretrain, seed, cfg) → byte-identical files."""
    cfg = cfg or WorldConfig()
    if n_pretrain < 1:
        raise InputError(f"n_pretrain={n_pretrain} is too small", "the world needs at least one pretraining image",
                         "pass n_pretrain >= 1")
    out = Path(out_dir).resolve()
    _prepare_out(out)
    counts = {"pretrain": _write_pretrain(out / "pretrain", n_pretrain, seed, cfg, progress)}
    counts["sft_images"], counts["sft_samples"] = _write_sft(out / "sft", max(1, round(cfg.sft_fraction * n_pretrain)),
                                                             seed, cfg)
    n_task = max(1, round(cfg.task_fraction * n_pretrain))
    tasks = {}
    for task in TASKS:
        tasks[task] = _write_task(out / "tasks" / task, task, n_task, seed, cfg)
        counts[f"task_{task}"] = n_task
    counts["eval"] = _write_eval(out / "eval", seed, cfg)
    _write_world_json(out / "world.json", n_pretrain, seed, cfg, counts)
    return WorldPaths(root=out, pretrain_manifest=out / "pretrain" / "manifest.jsonl", sft=out / "sft" / "data.json",
                      tasks=tasks, eval=out / "eval" / "eval.json", world_json=out / "world.json", counts=counts)


def _write_pretrain(pdir: Path, n: int, seed: int, cfg: WorldConfig, progress: bool) -> int:
    """Pretraining images + alt-text manifest (stream "pretrain": exactly what iter_synthetic yields)."""
    (pdir / "images").mkdir(parents=True)
    lines = []
    it = iter_synthetic(n, seed, cfg)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, total=n, desc="world: pretraining images", unit="img", leave=False)
    for i, (png, alt, meta) in enumerate(it):
        name = f"pt-{i:06d}.png"
        (pdir / "images" / name).write_bytes(png)
        lines.append(json.dumps({"file": f"images/{name}", "caption": alt, "meta": meta}, ensure_ascii=False))
    (pdir / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n


def _write_sft(sdir: Path, n_sft: int, seed: int, cfg: WorldConfig) -> tuple[int, int]:
    """SFT set: per image a true detailed description for one of the long prompts, plus a VQA sample."""
    sft = []
    for i in range(n_sft):
        png, alt, meta, rng = synthetic_item(i, seed, cfg, stream="sft")
        name = f"sft-{i:06d}.png"
        (sdir / "images").mkdir(parents=True, exist_ok=True)
        (sdir / "images" / name).write_bytes(png)
        sft.append({"id": f"sft-{i:06d}-desc", "image": f"images/{name}",
                    "conversations": _conv(rng.choice(LONG_PROMPTS), describe(meta, "detailed"), True)})
        qa = make_vqa(rng, meta, cfg, names=False)
        turns = []
        for k, q in enumerate(rng.sample(qa, min(cfg.sft_vqa_turns, len(qa)))):
            turns += _conv(q["question"], q["answer"], k == 0)
        if cfg.name_prob > 0 and rng.random() < cfg.sft_name_prob:
            q = name_question(rng, meta)
            turns += _conv(q["question"], q["answer"], not turns)
        if turns:
            sft.append({"id": f"sft-{i:06d}-vqa", "image": f"images/{name}", "conversations": turns})
    _write_json(sdir / "data.json", sft)
    return n_sft, len(sft)


def _task_conversation(task: str, rng: random.Random, meta: dict) -> list[dict]:
    """One task-set sample: the task's describe prompt → its description, then the task's questions."""
    if task == "spatial":
        conv = _conv(rng.choice(SPATIAL_PROMPTS), describe(meta, "spatial"), True)
        for q in _spatial_qa(rng, meta):
            conv += _conv(q["question"], q["answer"], False)
    elif task == "grounding":
        conv = _conv(GROUNDING_PROMPT, describe(meta, "grounded"), True)
        o = rng.choice(meta["objects"])
        conv += _conv(f"Where is the {_desc(o)}? Answer with [xmin,ymin,xmax,ymax].", format_box(o["box_1000"]), False)
    else:
        conv = _conv(OCR_PROMPT, describe(meta, "ocr"), True)
        conv += _conv("What word is written in the image?", meta["word"] or NO_WORD_ANSWER, False)
        if meta["word"]:
            conv += _conv("Where is the text in the image?", meta["word_position"], False)
    return conv


def _write_task(tdir: Path, task: str, n_task: int, seed: int, cfg: WorldConfig) -> Path:
    """One specialist's task set, from its own image stream (spatial: ≥ 2 objects; OCR: mostly with a word)."""
    (tdir / "images").mkdir(parents=True)
    rows = []
    for i in range(n_task):
        png, alt, meta, rng = synthetic_item(
            i, seed, cfg, stream=f"task-{task}",
            word_prob=cfg.task_ocr_word_prob if task == "ocr" else None,
            min_objects=2 if task == "spatial" else None)
        name = f"{task}-{i:06d}.png"
        (tdir / "images" / name).write_bytes(png)
        rows.append({"id": f"{task}-{i:06d}", "image": f"images/{name}", "conversations": _task_conversation(task, rng, meta)})
    _write_json(tdir / "data.json", rows)
    return tdir / "data.json"


def _write_eval(edir: Path, seed: int, cfg: WorldConfig) -> int:
    """Held-out eval set: its own stream, full ground truth, VQA with skill labels, the alt-text baseline."""
    (edir / "images").mkdir(parents=True)
    items = []
    for i in range(cfg.n_eval):
        png, alt, meta, rng = synthetic_item(i, seed, cfg, stream="eval")
        name = f"eval-{i:06d}.png"
        (edir / "images" / name).write_bytes(png)
        item = {"id": f"eval-{i:06d}", "image": f"images/{name}", "alt_text": alt,
                "caption_prompt": EVAL_CAPTION_PROMPT, "grounding_prompt": GROUNDING_PROMPT,
                "reference_caption": describe(meta, "detailed")}
        item.update(meta)
        item["vqa"] = make_vqa(rng, meta, cfg, ocr_none_prob=cfg.eval_ocr_none_prob)
        items.append(item)
    _write_json(edir / "eval.json", items)
    return cfg.n_eval


def _write_world_json(path: Path, n_pretrain: int, seed: int, cfg: WorldConfig, counts: dict) -> None:
    world = {"world_version": WORLD_VERSION, "seed": seed, "n_pretrain": n_pretrain, "config": config_dict(cfg),
             "vocabulary": world_vocabulary(cfg), "counts": counts,
             "prompts": {"long": list(LONG_PROMPTS), "spatial": list(SPATIAL_PROMPTS), "grounding": GROUNDING_PROMPT,
                         "ocr": OCR_PROMPT, "eval_caption": EVAL_CAPTION_PROMPT},
             "skills": [s for s in SKILLS if s != "name" or cfg.name_prob > 0]}
    _write_json(path, world)


def load_world_config(path) -> WorldConfig:
    """A WorldConfig from a YAML or JSON file (a world.json's "config" block works too)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"world config {p} not found", "the path does not exist", "check the path")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"world config {p} cannot be read", " ".join(str(e).split())[:200],
                         "pass a UTF-8 YAML or JSON file") from None
    if p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            d = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise InputError(f"world config {p} is not valid YAML", " ".join(str(e).split())[:200],
                             "fix the syntax (see examples/synthetic_world.yaml)") from None
    else:
        try:
            d = json.loads(text)
        except ValueError as e:
            raise InputError(f"world config {p} is not valid JSON", str(e), "fix the syntax") from None
    if not isinstance(d, dict):
        raise InputError(f"world config {p} is not a mapping", f"it holds a {type(d).__name__}",
                         "write WorldConfig fields as `name: value` lines (see examples/synthetic_world.yaml)")
    if "config" in d and "world_version" in d:
        d = d["config"]
    return WorldConfig.from_dict(d)
