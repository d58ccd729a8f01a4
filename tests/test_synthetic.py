"""The synthetic world: determinism, exact ground truth in the pixels, weak alt-text, emitted sets."""
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curator.errors import InputError
from curator.world.grade import grade_caption, grade_grounding, parse_caption
from curator.world.synthetic import (COLOR_RGB, GROUNDING_PROMPT, LONG_PROMPTS, OCR_PROMPT, POSITIONS, SKILLS,
                               SPATIAL_PROMPTS, WorldConfig, describe, generate_world, iter_synthetic,
                               load_world_config, synthetic_item, world_vocabulary)

SMALL = WorldConfig(n_eval=12)


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "world"
    return generate_world(out, n_pretrain=40, seed=3, cfg=SMALL)


def test_same_seed_gives_byte_identical_world(world, tmp_path):
    again = generate_world(tmp_path / "again", n_pretrain=40, seed=3, cfg=SMALL)
    a, b = _digest(world.root), _digest(again.root)
    assert len(a) == 40 + 12 + 3 * 4 + 12 + 7  # images of every set (SFT 0.3 × 40) + manifest, 5 data/eval JSONs, world.json
    assert a == b
    other = _digest(generate_world(tmp_path / "other", n_pretrain=40, seed=4, cfg=SMALL).root)
    assert other["pretrain/manifest.jsonl"] != a["pretrain/manifest.jsonl"]
    assert other["pretrain/images/pt-000000.png"] != a["pretrain/images/pt-000000.png"]


def test_regenerating_into_a_world_dir_replaces_it_but_foreign_dirs_are_refused(tmp_path):
    generate_world(tmp_path / "w", n_pretrain=5, seed=0, cfg=SMALL)
    w = generate_world(tmp_path / "w", n_pretrain=3, seed=0, cfg=SMALL)
    assert len(list((w.root / "pretrain" / "images").iterdir())) == 3
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty — it holds files that are not a synthetic world"):
        generate_world(tmp_path / "foreign", n_pretrain=3)


def test_iter_synthetic_is_the_pretraining_set(world):
    rows = [json.loads(line) for line in world.pretrain_manifest.read_text().splitlines()]
    items = list(iter_synthetic(40, seed=3, cfg=SMALL))
    assert len(rows) == len(items) == 40
    for row, (png, alt, meta) in zip(rows, items):
        assert (world.root / "pretrain" / row["file"]).read_bytes() == png
        assert row["caption"] == alt and row["meta"] == meta


def test_eval_sft_and_task_images_are_not_pretraining_images(world):
    pre = {hashlib.sha256(p.read_bytes()).digest() for p in (world.root / "pretrain" / "images").iterdir()}
    for sub in ("eval/images", "sft/images", "tasks/spatial/images", "tasks/grounding/images", "tasks/ocr/images"):
        other = {hashlib.sha256(p.read_bytes()).digest() for p in (world.root / sub).iterdir()}
        assert not pre & other, sub


def test_ground_truth_matches_the_pixels():
    n_words = 0
    for png, _, meta in iter_synthetic(150, seed=0):
        img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        assert img.shape == (64, 64, 3)
        objs = meta["objects"]
        assert 1 <= len(objs) <= 4
        assert len({tuple(o["cell"]) for o in objs}) == len(objs)           # one object per cell
        assert len({(o["color"], o["shape"]) for o in objs}) == len(objs)   # unambiguous references
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            r, c = o["cell"]
            assert o["position"] == POSITIONS[3 * r + c]
            edges = [0, 21, 43, 64]
            assert edges[c] <= x0 < x1 <= edges[c + 1] and edges[r] <= y0 < y1 <= edges[r + 1]
            side = x1 - x0
            assert (7 <= side <= 10) if o["size"] == "small" else (14 <= side <= 19), o
            # the object's color fills its box's extent exactly (tolerance 1 px for polygon rasterisation)
            mask = (np.abs(img - np.array(COLOR_RGB[o["color"]])).sum(axis=2) == 0)
            ys, xs = np.nonzero(mask[edges[r]:edges[r + 1], edges[c]:edges[c + 1]])
            got = [xs.min() + edges[c], ys.min() + edges[r], xs.max() + 1 + edges[c], ys.max() + 1 + edges[r]]
            assert all(abs(g - t) <= 1 for g, t in zip(got, o["box"])), (o, got)
        if meta["word"]:
            n_words += 1
            x0, y0, x1, y1 = meta["word_box"]
            dark = (img[y0:y1, x0:x1].sum(axis=2) < 200).sum()
            assert dark >= 8, meta  # the word is really drawn, inside its box
            assert (img[:, :, :].sum(axis=2) < 200).sum() == dark  # and nowhere else
        rel = {(r["a"], r["rel"], r["b"]) for r in meta["relations"]}
        for i, a in enumerate(objs):
            for j, b in enumerate(objs):
                assert ((i, "left of", j) in rel) == (a["cell"][1] < b["cell"][1])
                assert ((i, "above", j) in rel) == (a["cell"][0] < b["cell"][0])
    assert 30 <= n_words <= 60  # word_prob 0.3 of 150


def test_alt_text_is_weak_and_noisy():
    cfg = WorldConfig()
    n, n_color, n_wrong, n_filler_only, n_complete = 0, 0, 0, 0, 0
    for png, alt, meta in iter_synthetic(600, seed=1, cfg=cfg):
        n += 1
        p = parse_caption(alt)
        assert len(p.mentions) <= 1, alt                      # at most one object named
        assert not any(m.position for m in p.mentions), alt   # never a position
        assert not re.search(r"\b(top|bottom|middle|center|left|right)\b", alt), alt
        r = grade_caption(alt, meta)
        n_complete += r["recall"] == 1.0
        if p.mentions and p.mentions[0].color:
            n_color += 1
            matched = [o for o in meta["objects"] if o["shape"] == p.mentions[0].shape]
            n_wrong += not any(o["color"] == p.mentions[0].color for o in matched)
        n_filler_only += alt in {"stock photo", "free download", "image", "high quality", "vector illustration",
                                 "clipart", "png", "icon", "royalty free", "hd wallpaper", "on white background",
                                 "photo", "design element"}
    assert n_complete == 0                       # never the full fact set
    assert 0.2 <= n_wrong / n_color <= 0.4       # alt_wrong_color = 0.3
    assert 0.05 <= n_filler_only / n <= 0.15     # alt_filler_only = 0.1


def test_descriptions_are_true_complete_and_compact():
    longest = 0
    for png, alt, meta in iter_synthetic(300, seed=2):
        r = grade_caption(describe(meta, "detailed"), meta)
        assert (r["precision"], r["recall"]) == (1.0, 1.0), describe(meta)
        rs = grade_caption(describe(meta, "spatial"), meta)
        assert rs["precision"] == 1.0 and rs["by_kind"]["object"]["recalled"] == 4 * len(meta["objects"])
        # "is left of and above" states both relations: every true relation is stated
        assert rs["by_kind"]["relation"]["stated"] == len(meta["relations"])
        assert grade_grounding(describe(meta, "grounded"), meta) == 1.0
        longest = max(longest, r["length_words"])
    assert longest <= 100


def test_describe_exact_text():
    meta = synthetic_item(0, seed=0)[2]
    assert describe(meta) == (
        "a small yellow triangle at the top left. a large pink circle at the top center. a large green circle at "
        "the top right. a large brown diamond at the center. the triangle is left of the pink circle. the triangle "
        "is left of the green circle. the triangle is left of the diamond. the pink circle is left of the green "
        "circle. the pink circle is above the diamond. the green circle is right of the diamond.")
    assert describe(meta, "grounded").startswith("a small yellow triangle [172,109,297,234]. a large pink circle [")
    assert describe(meta, "ocr") == "there is no text in the image."


def test_sft_set_is_llava_with_long_prompts_and_vqa(world):
    data = json.loads(world.sft.read_text())
    assert len(data) == 24  # 12 images (0.3 × 40) × (description + VQA)
    for k, row in enumerate(data):
        assert (world.sft.parent / row["image"]).is_file()
        conv = row["conversations"]
        assert conv[0]["from"] == "human" and conv[0]["value"].startswith("<image>\n")
        assert [c["from"] for c in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert all("<image>" not in c["value"] for c in conv[1:])
        meta = synthetic_item(k // 2, seed=3, cfg=SMALL, stream="sft")[2]
        if row["id"].endswith("-desc"):
            assert conv[0]["value"][len("<image>\n"):] in LONG_PROMPTS
            r = grade_caption(conv[1]["value"], meta)
            assert (r["precision"], r["recall"]) == (1.0, 1.0)
        else:
            assert len(conv) == 2 * SMALL.sft_vqa_turns


def test_task_sets(world):
    for task, prompts in (("spatial", SPATIAL_PROMPTS), ("grounding", (GROUNDING_PROMPT,)), ("ocr", (OCR_PROMPT,))):
        rows = json.loads(world.tasks[task].read_text())
        assert len(rows) == 4
        for i, row in enumerate(rows):
            conv = row["conversations"]
            assert conv[0]["value"][len("<image>\n"):] in prompts
            meta = synthetic_item(i, seed=3, cfg=SMALL, stream=f"task-{task}", min_objects=2 if task == "spatial" else None,
                                  word_prob=SMALL.task_ocr_word_prob if task == "ocr" else None)[2]
            if task == "grounding":
                assert grade_grounding(conv[1]["value"], meta) == 1.0
                assert re.fullmatch(r"\[\d{3},\d{3},\d{3},\d{3}\]", conv[3]["value"])
            elif task == "spatial":
                assert len(meta["objects"]) >= 2
                assert grade_caption(conv[1]["value"], meta)["precision"] == 1.0
                asks = [c["value"] for c in conv[2::2]]
                assert "[" in asks[0] and "[" not in asks[1] and asks[1].endswith("?")   # with boxes, then without
                assert re.fullmatch(r"Is the \w+ \w+ (left of|right of|above|below) the \w+ \w+\?", asks[1])
            else:
                assert conv[3]["value"] == (meta["word"] or "none")


def test_eval_items_carry_truth_vqa_skills_and_alt_text(world):
    items = json.loads(world.eval.read_text())
    assert len(items) == 12
    skills = set()
    for it in items:
        assert (world.eval.parent / it["image"]).is_file()
        assert {"id", "objects", "word", "relations", "vqa", "alt_text", "caption_prompt"} <= set(it)
        skills |= {q["skill"] for q in it["vqa"]}
        assert all(q["skill"] in SKILLS for q in it["vqa"])
        r = grade_caption(it["reference_caption"], it)
        assert (r["precision"], r["recall"]) == (1.0, 1.0)
    assert skills >= {"color", "shape", "size", "count", "position", "spatial"}
    world_json = json.loads(world.world_json.read_text())
    assert world_json["vocabulary"] == json.loads(json.dumps(world_vocabulary(SMALL)))
    assert world_json["counts"]["eval"] == 12


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match=r"unknown WorldConfig keys \['n_objects'\]"):
        WorldConfig.from_dict({"n_objects": 3})
    with pytest.raises(InputError, match=r"WorldConfig.colors=\['red', 'teal'\] is invalid"):
        WorldConfig(colors=("red", "teal"))
    with pytest.raises(InputError, match="objects range 1..9 is invalid"):
        WorldConfig(max_objects=9)
    with pytest.raises(InputError, match="alt_wrong_color=1.5 is invalid"):
        WorldConfig(alt_wrong_color=1.5)
    p = tmp_path / "w.yaml"
    p.write_text("max_objects: 3\ncolors: [red, blue, green]\n")
    cfg = load_world_config(p)
    assert cfg.max_objects == 3 and cfg.colors == ("red", "blue", "green")
    assert all(len(m["objects"]) <= 3 for _, _, m in iter_synthetic(20, 0, cfg))


def test_example_config_loads():
    cfg = load_world_config(Path(__file__).resolve().parents[1] / "examples" / "synthetic_world.yaml")
    assert cfg == WorldConfig()


def test_names_are_off_by_default_and_alt_text_knowledge_when_on(world, tmp_path):
    from curator.world.synthetic import NAME_LIST, object_name

    default = [json.loads(x) for x in world.pretrain_manifest.read_text().splitlines()]
    assert not any(n in re.findall(r"[a-z]+", r["caption"]) for r in default for n in NAME_LIST)
    assert "name" not in json.loads(world.world_json.read_text())["skills"]
    w = generate_world(tmp_path / "named", n_pretrain=300, seed=3, cfg=WorldConfig(n_eval=40, name_prob=0.5))
    rows = [json.loads(x) for x in w.pretrain_manifest.read_text().splitlines()]
    named = [(r, n) for r in rows for n in NAME_LIST if n in re.findall(r"[a-z]+", r["caption"])]
    # a name is always the true name of an object in the image (the web knows names; colors may be wrong)
    assert all(n in {object_name(o) for o in r["meta"]["objects"]} for r, n in named)
    assert len(named) == 148   # ≈ 300 × 0.9 (names an object) × 0.5 = 135
    # 90 SFT images × 0.2 ≈ 18 carry one name question
    sft = json.loads(w.sft.read_text())
    name_qs = [c for s in sft for c in s["conversations"] if "What is the name" in c["value"]]
    descs = " ".join(c["value"] for s in sft if s["id"].endswith("-desc") for c in s["conversations"])
    assert len(name_qs) == 19 and not any(n in descs.split() for n in NAME_LIST)   # descriptions never name
    items = json.loads(w.eval.read_text())
    qs = [q for it in items for q in it["vqa"] if q["skill"] == "name"]
    assert len(qs) == 40 and all(q["answer"] in NAME_LIST for q in qs)
    assert "name" in json.loads(w.world_json.read_text())["skills"]
