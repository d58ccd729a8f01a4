"""Make the README's App screenshot (docs/img/fiftyone.png): six synthetic images with caption versions of
rounds 0–2 side by side, served by `curator inspect`'s library functions, shot in headless Chromium.

    .venv/bin/python tests/browser/readme_screenshot.py docs/img/fiftyone.png

The captions are written here by hand in the shape the loop produces (round 0 = the noisy alt-text,
round 1 = a short self-caption with one wrong color, round 2 = the world's true detailed description and a
spatial specialist's), so the picture shows what inspect shows; `make demo` stores the real ones.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/ (for browser.chrome)


def build(store_dir: str):
    from curator.schema import caption_key, image_key
    from curator.store import Store
    from curator.world.synthetic import describe, iter_synthetic

    st = Store(store_dir, create=True)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    imgs, caps = [], []
    for k, (data, alt, meta) in enumerate(iter_synthetic(6, seed=3)):
        iid = image_key(data)
        imgs.append({"image_id": iid, "uri": f"synthetic/{k:06d}.png", "source": "synthetic", "width": meta["width"],
                     "height": meta["height"], "format": "PNG", "split": "train", "meta": json.dumps(meta),
                     "bytes": data, "ingested_at": t0, "run_id": "ingest-demo"})
        detailed = describe(meta)
        first = detailed.split(". ")[0].rstrip(".") + "."
        wrong = "blue" if "blue" not in first else "red"
        r1 = first.replace(meta["objects"][0]["color"], wrong, 1)
        for rnd, kind, text, who in ((0, "original", alt, "source"), (1, "self", r1, "c1" * 32),
                                     (2, "self", detailed, "c2" * 32), (2, "spatial", describe(meta, "spatial"), "5a" * 32)):
            caps.append({"caption_id": caption_key(iid, rnd, kind, who, "" if rnd == 0 else "long-1"), "image_id": iid,
                         "round": rnd, "kind": kind, "text": text, "captioner": who,
                         "prompt_id": "" if rnd == 0 else "long-1", "prompt": "", "sampling": "", "sample_idx": 0,
                         "finish_reason": "source" if rnd == 0 else "eos", "n_tokens": None,
                         "parent_caption_id": "", "transform": "", "run_id": f"demo-r{rnd}",
                         "created_at": t0 + timedelta(minutes=rnd)})
    st.add_images(imgs, run_id="ingest-demo")
    st.add_captions(caps)
    return st


def main(out: str) -> None:
    tmp = tempfile.mkdtemp(prefix="readme-shot-")
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", os.path.join(tmp, "db"))
    from browser.chrome import hide_promo, open_chromium, wait_for_text
    from curator.inspect import app_url, build_dataset, fiftyone, launch

    fo = fiftyone()
    res = build_dataset(build(os.path.join(tmp, "store")), name="curator-demo", cache_dir=os.path.join(tmp, "cache"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(res.dataset, port=port)
    # the picture: a two-object scene, with the grades group open under the captions
    two = [x for x in res.dataset.sort_by("image_id") if x["r2_self"].count(". ") == 2]   # 2 objects + 1 relation
    sample = two[0] if two else res.dataset.first()
    groups = res.dataset.app_config.sidebar_groups
    groups[1].expanded = True
    groups[1].paths = ["r1_self_hallucinated", "r1_self_recall", "r2_self_recall", "r2_spatial_recall"]
    res.dataset.save()
    driver = open_chromium(os.path.join(tmp, "profile"), width=1400, height=1000)
    try:
        hide_promo(driver, f"http://127.0.0.1:{port}")
        driver.get(f"{app_url('127.0.0.1', port, 'curator-demo')}?id={sample.id}")
        wait_for_text(driver, sample["r2_spatial"][:40])
        driver.save_screenshot(out)
    finally:
        driver.quit()
        fo.close_app()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/fiftyone.png")
