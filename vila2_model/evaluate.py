"""Generate a checkpoint's answers for a held-out eval set (the curator side grades them: curator.world.grade.grade_eval).

eval.json = [{"id", "image" (relative to the file), "vqa": [{"question", "answer", "skill"}], ...ground truth}].
One fixed long prompt for captions (long-v1, so rounds are compared on the same request), greedy decoding.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

CAPTION_PROMPT = "Describe the image in details."   # VILA² long-v1
GROUNDING_PROMPT = ("Elaborate on the visual and narrative elements in the image, and specify their location "
                    "with [xmin,ymin,xmax,ymax].")   # the grounding specialist's recaption prompt


def predict(ckpt_dir: str | Path, eval_json: str | Path, caption_prompt: str = CAPTION_PROMPT,
            grounding_prompt: str | None = GROUNDING_PROMPT, max_new_tokens: int = 96, vqa_max_new_tokens: int = 16,
            batch_size: int = 32, limit: int | None = None, device: str = "cpu", generator=None) -> dict:
    """{"captions": {id: text}, "vqa": {id: [answers in question order]}, "grounding": {id: text}}
    plus "finish": {id: caption finish_reason} and "prompts" (what was asked)."""
    from vila2_model.generate import Generator

    eval_json = Path(eval_json)
    items = json.loads(eval_json.read_text())[:limit]
    gen = generator or Generator(ckpt_dir, device=device)
    images = {it["id"]: Image.open(eval_json.parent / it["image"]).convert("RGB") for it in items}
    ids = [it["id"] for it in items]
    caps = gen.generate([images[i] for i in ids], [caption_prompt] * len(ids), max_new_tokens=max_new_tokens,
                        batch_size=batch_size, progress="eval: captions")
    out = {"captions": {i: c.text for i, c in zip(ids, caps)},
           "finish": {i: c.finish_reason for i, c in zip(ids, caps)},
           "vqa": {}, "grounding": {},
           "prompts": {"caption": caption_prompt, "grounding": grounding_prompt}}
    qs = [(it["id"], q["question"]) for it in items for q in it.get("vqa", [])]
    if qs:
        ans = gen.generate([images[i] for i, _ in qs], [q for _, q in qs], max_new_tokens=vqa_max_new_tokens,
                           batch_size=batch_size, progress="eval: VQA")
        for (i, _), a in zip(qs, ans):
            out["vqa"].setdefault(i, []).append(a.text)
    if grounding_prompt:
        gr = gen.generate([images[i] for i in ids], [grounding_prompt] * len(ids), max_new_tokens=max_new_tokens,
                          batch_size=batch_size, progress="eval: grounding")
        out["grounding"] = {i: g.text for i, g in zip(ids, gr)}
    return out
