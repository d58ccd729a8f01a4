"""Compare two models' eval runs image by image: caption P×R is a mean over eval images of each caption's
precision × recall, so the difference of two runs on the same eval set is a mean of per-image differences,
with a standard error and a 95% interval (normal approximation; 1.96 SE).

    python experiments/paired_eval.py EVAL_A.json EVAL_B.json [EVAL_C.json ...]   # each against the first

EVAL_*.json: what the loop's eval step writes (OUT/eval/round-K.json: eval path, metrics, predictions).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.world.grade import grade_captions  # noqa: E402


def per_image(path: str) -> tuple[str, dict]:
    d = json.loads(Path(path).read_text())
    items = json.loads(Path(d["eval"]).read_text())
    caps = d["predictions"]["captions"]
    # the eval's own P×R of each image alone (its mean over the images is the recorded caption_p_x_r)
    return d["eval"], {it["id"]: grade_captions(caps, [it])["caption_p_x_r"] for it in items}


def main(paths: list[str]) -> None:
    if len(paths) < 2:
        raise SystemExit("usage: paired_eval.py EVAL_A.json EVAL_B.json [...]")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"paired_eval: {missing[0]} not found (an eval JSON the loop writes: OUT/eval/round-K.json)")
    ev0, base = per_image(paths[0])
    print(f"| run | n | P×R | − {Path(paths[0]).stem} | 95% interval |")
    print("|---|---|---|---|---|")
    print(f"| {paths[0]} | {len(base)} | {sum(base.values()) / len(base):.3f} | | |")
    for p in paths[1:]:
        ev, other = per_image(p)
        if ev != ev0 or other.keys() != base.keys():
            raise SystemExit(f"{p} was graded on another eval set ({ev}, not {ev0})")
        diffs = [other[k] - base[k] for k in base]
        n = len(diffs)
        m = sum(diffs) / n
        se = math.sqrt(sum((x - m) ** 2 for x in diffs) / (n - 1) / n)
        print(f"| {p} | {n} | {sum(other.values()) / n:.3f} | {m:+.3f} | {m - 1.96 * se:+.3f} … {m + 1.96 * se:+.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
