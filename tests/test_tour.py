"""The README's five-minute tour, run exactly as printed, on real photographs.

The commands are parsed from README.md (the first ```bash block under the heading "## Five-minute tour…"),
so the README and this test cannot drift. Each line runs with bash in a fresh working directory, the way a
user pastes it; the test supplies what the README leaves to the reader as environment variables:

    PHOTOS  a folder holding the sample photographs scikit-image ships in its wheel (skimage/data)
    CKPT    a local InternVL-format checkpoint: a micro model trained here in about a minute to say which
            colour fills each quarter of an image (a real, if very small, captioner: its captions differ
            from photo to photo, so the filters keep most of them)

and checks each step's output: images landed, captions per round, verdict counts, rows in the build (> 0,
loadable by `datasets` and by the `webdataset` package's reader) and the FiftyOne dataset's sample count.
"""
from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inspect_store import drop_datasets, fiftyone_env

pytestmark = [pytest.mark.slow, pytest.mark.browser]   # trains a model; inspect needs FiftyOne's mongod

ROOT = Path(__file__).resolve().parents[1]
TOUR_HEADING = "## Five-minute tour"

# The toy captioner's world: a colour per quarter of the image.
COLORS = {"red": (200, 40, 40), "green": (50, 160, 60), "blue": (40, 60, 200), "yellow": (220, 200, 50),
          "white": (240, 240, 240), "black": (15, 15, 15), "gray": (128, 128, 128), "brown": (120, 80, 40)}
QUARTERS = ("top left", "top right", "bottom left", "bottom right")


def tour_commands(readme: str) -> list[str]:
    """The command lines of the first ```bash block under the tour heading (continuation lines joined)."""
    lines = readme.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(TOUR_HEADING)), None)
    assert start is not None, f"README.md has no heading starting with {TOUR_HEADING!r}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    fence = next((i for i in range(start, end) if lines[i].strip() == "```bash"), None)
    assert fence is not None, f"no ```bash block under {TOUR_HEADING!r}"
    block = []
    for line in lines[fence + 1:end]:
        if line.strip() == "```":
            break
        block.append(line)
    commands, pending = [], ""
    for line in block:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        cmd = (pending + line).strip()
        pending = ""
        if cmd and not cmd.startswith("#"):
            commands.append(cmd)
    return commands


def subcommand(cmd: str) -> str:
    words = shlex.split(cmd, comments=True)
    assert words[0] == "curator", f"the tour runs curator commands only: {cmd!r}"
    return next(w for w in words[1:] if not w.startswith("-"))


def test_tour_commands_parse():
    cmds = tour_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert [subcommand(c) for c in cmds][:3] == ["ingest", "recaption", "filter"]
    assert {"sql", "build", "inspect"} <= {subcommand(c) for c in cmds}


# ------------------------------------------------------------------------------------------ fixtures
def copy_sample_photos(dest: Path) -> list[str]:
    """scikit-image's sample images (photographs, scans, a GIF, TIFFs) as files in a folder."""
    import skimage.data

    src = Path(skimage.data.__file__).parent
    dest.mkdir(parents=True)
    names = sorted(p.name for p in src.iterdir() if p.suffix.lower() in {".png", ".jpg", ".gif", ".tif"})
    for n in names:
        shutil.copyfile(src / n, dest / n)
    return names


def _quarter_image(rng: random.Random, size: int = 32):
    from PIL import Image

    names = [rng.choice(list(COLORS)) for _ in QUARTERS]
    im = Image.new("RGB", (size, size))
    h = size // 2
    for k, name in enumerate(names):
        x, y = (k % 2) * h, (k // 2) * h
        im.paste(tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLORS[name]), (x, y, x + h, y + h))
    return im, " , ".join(f"{n} at the {q}" for n, q in zip(names, QUARTERS)) + " ."


def train_captioner(out: Path, n: int = 500, epochs: float = 5, seed: int = 0) -> Path:
    """A micro InternVL-format model fine-tuned to answer the recaption prompts (the vila2 set) with the colour
    of each quarter of the image. ~2,500 samples, 157 steps: enough for captions that differ per photo (fewer
    steps measured: every photo got the same caption, and the template filter rejected them all)."""
    import torch

    from curator.prompts import load_prompts
    from vila2_model.checkpoint import save_checkpoint
    from vila2_model.data import Sample, encode_samples
    from vila2_model.model import build_model
    from vila2_model.tokenizer import build_processor
    from vila2_model.train import run_stage

    book = load_prompts()
    prompts = [book.prompts[p] for p in book.sets["vila2"]]
    rng = random.Random(seed)
    data = [_quarter_image(rng) for _ in range(n)]
    proc = build_processor([c for _, c in data] + prompts, None, "micro")
    model = build_model("micro", proc, seed=seed)
    samples = [Sample(im, [{"from": "human", "value": "<image>\n" + prompts[i % len(prompts)]},
                           {"from": "gpt", "value": cap}]) for i, (im, cap) in enumerate(data)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # see conftest.one_torch_thread
    try:
        run_stage(model, proc, encode_samples(proc, samples), out / "train", stage="sft", epochs=epochs, lr=3e-3,
                  batch_size=16, seed=seed, progress=False)
    finally:
        torch.set_num_threads(threads)
    save_checkpoint(model, proc, out / "ckpt")
    return out / "ckpt"


# ------------------------------------------------------------------------------------------ the tour
def run_line(cmd: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    res = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd}\nexited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


def test_readme_tour_on_scikit_image_photographs(tmp_path, tmp_path_factory):
    fiftyone_env(tmp_path_factory)   # a mongod database of this test session; the subprocesses inherit it
    from curator.inspect import fiftyone

    fo = fiftyone()
    drop_datasets(fo, ["curator"])   # the tour's dataset name (the default)
    photos = copy_sample_photos(tmp_path / "photos")
    ckpt = train_captioner(tmp_path / "model")
    work = tmp_path / "work"
    (work / "home").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "CURATOR_STORE"}
    env.update(PHOTOS=str(tmp_path / "photos"), CKPT=str(ckpt), HOME=str(work / "home"),
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    checks = {"ingest": check_ingest, "recaption": check_recaption, "filter": check_filter, "sql": check_sql,
              "build": check_build, "inspect": check_inspect}
    state = {"photos": photos, "work": work, "fo": fo}
    cmds = tour_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    for cmd in cmds:
        res = run_line(cmd, work, env)
        check = checks.get(subcommand(cmd))
        if check:
            check(cmd, res.stdout, state)
    assert {"ingest", "recaption", "filter", "sql", "build", "inspect"} <= set(state["done"])


def _store(state):
    from curator.store import Store

    return Store(str(state["work"] / "curator_store"))


def _one(store, sql: str):
    return store.sql(sql).to_pylist()[0]


def check_ingest(cmd, out, state):
    # 29 files; Pillow cannot identify multipage_rgb.tif (refused with its reason), the other 28 land.
    store = _store(state)
    assert len(state["photos"]) == 29
    n = _one(store, "SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM images")
    assert n == {"n": 28, "d": 28}
    assert "  images added        28" in out and "not_an_image             1" in out
    assert "multipage_rgb.tif" in out and "  without a caption   28" in out
    meta = {os.path.basename(r["uri"]): json.loads(r["meta"]) for r in
            store.sql("SELECT uri, meta FROM images").to_pylist()}
    assert (meta["no_time_for_that_tiny.gif"]["frames"], meta["no_time_for_that_tiny.gif"]["kept_frame"]) == (24, 0)
    big = _one(store, "SELECT width, height, format FROM images WHERE uri LIKE '%retina.jpg'")
    assert big == {"width": 1411, "height": 1411, "format": "JPEG"}   # never stored resized
    assert _one(store, "SELECT count(*) AS n FROM captions")["n"] == 0   # no alt-text at all
    state.setdefault("done", []).append("ingest")


def check_recaption(cmd, out, state):
    store = _store(state)
    rows = store.sql("SELECT round, kind, count(*) AS n FROM captions GROUP BY ALL ORDER BY ALL").to_pylist()
    assert rows == [{"round": 1, "kind": "self", "n": 28}]
    assert "added 28  failed 0" in out
    texts = store.sql("SELECT text FROM captions").column("text").to_pylist()
    # The captioner describes each photo in its own words: mostly well-formed, and different between photos.
    formed = [t for t in texts if re.fullmatch(r"(\w+ at the (top|bottom) (left|right) , ){3}\w+ at the bottom right \.", t)]
    assert len(formed) >= len(texts) // 2 and len(set(texts)) >= 5, texts
    state["done"].append("recaption")


def check_filter(cmd, out, state):
    store = _store(state)
    verdicts = store.sql("SELECT filter, sum(keep::INT) AS kept, sum((NOT keep)::INT) AS dropped "
                         "FROM verdicts GROUP BY filter ORDER BY filter").to_pylist()
    assert [v["filter"] for v in verdicts] == ["charset", "length", "ngram", "repetition", "template", "truncation"]
    assert all(v["kept"] + v["dropped"] == 28 for v in verdicts), verdicts
    for v in verdicts:   # the command printed the same counts
        assert re.search(rf"{v['filter']}\s+kept\s+{v['kept']}\s+rejected\s+{v['dropped']}\s", out), (v, out)
    accepted = _one(store, "SELECT count(*) AS n FROM captions WHERE kind = 'self' AND caption_id NOT IN "
                           "(SELECT caption_id FROM rejected_captions)")["n"]
    assert 0 < accepted <= 28
    state["accepted"] = accepted
    state["done"].append("filter")


def check_sql(cmd, out, state):
    assert re.search(r"\b1\s*│\s*self\s*│\s*28\b", out), out
    state["done"].append("sql")


def check_build(cmd, out, state):
    import datasets
    import webdataset as wds

    words = shlex.split(cmd, comments=True)
    out_dir = state["work"] / words[words.index("--out") + 1]
    fmt = words[words.index("--format") + 1] if "--format" in words else "parquet"
    n = state["accepted"]
    print(out)   # shown with pytest -s: the rows per source on this machine
    # Every accepted recaption reached the training set: the recaption alone (there is no original).
    assert re.search(rf"^  rows\s+{n}$", out, re.M), out
    assert re.search(rf"^    recaption alone \(no original caption\)\s+{n}$", out, re.M), out
    assert re.search(rf"^  train images not in build\s+{28 - n} ", out, re.M), out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["rows"] == n and manifest["counts"]["sources"] == {"recaption": n}
    assert fmt == "webdataset", "the tour's build is checked as WebDataset shards"
    shards = sorted(str(p) for p in out_dir.glob("shard-*.tar"))
    ds = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train")
    assert ds.num_rows == n
    first = ds[0]
    conv = first["json"]["conversations"]
    assert conv[0] == {"from": "human", "value": "<image>"} and conv[1]["from"] == "gpt"
    assert " at the top left , " in conv[1]["value"] and "### Short description" not in conv[1]["value"]
    streamed = list(wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("jpg;png", "json"))
    assert len(streamed) == n
    assert all(im.mode == "RGB" and im.width > 0 for im, _ in streamed)
    state["done"].append("build")


def check_inspect(cmd, out, state):
    assert re.match(r"dataset curator: 28 added, 0 updated, 28 samples; caption fields: r1_self\n", out), out
    ds = state["fo"].load_dataset("curator")
    assert len(ds) == 28
    kept = sum(1 for s in ds if not s.tags)
    assert kept == state["accepted"]   # a rejected caption shows as a tag on its sample
    state["done"].append("inspect")
