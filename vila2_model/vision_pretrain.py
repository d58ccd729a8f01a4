"""Pretrain the vision tower + projector with dense per-image-token labels: the stand-in for a pretrained SigLIP.

VILA starts every round from a pretrained vision encoder. Nothing here downloads weights, and measured on this
machine the from-scratch tower does not learn to see small objects from the language-model loss within a
round's budget (docs/LOG.md). With a direct, dense signal it does in about a minute: each image token gets its
own classification targets (e.g. the color / shape / size of the object in that token's cell, 0 = nothing),
linear heads on the projector's output are trained with cross-entropy, then the heads are thrown away.

The caller supplies the labels (this library knows nothing of the synthetic world): `labels[name]` is a
LongTensor (n_images, image_tokens) of class ids in [0, n_classes[name]). The result is an ordinary HF
checkpoint (vision tower + projector trained, LLM still random) that `train_vlm(init_from=...)` starts from.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch

from vila2_model.checkpoint import content_hash, save_checkpoint
from vila2_model.errors import ModelError

DONE = "vila2_vision_pretrain.json"


def _check(images, labels, n_classes, tokens, what):
    if not images:
        raise ModelError(f"vision pretraining has no {what} images", "the image list is empty",
                         "pass at least one image with its labels")
    if set(labels) != set(n_classes):
        raise ModelError(f"{what} labels {sorted(labels)} do not match the heads {sorted(n_classes)}",
                         "every head needs labels and every label set a head", "pass the same keys in both")
    for k, y in labels.items():
        if tuple(y.shape) != (len(images), tokens):
            raise ModelError(f"{what} labels[{k!r}] have shape {tuple(y.shape)}",
                             f"expected ({len(images)}, {tokens}): one class id per image token",
                             "build labels on the model's token grid (image_seq_length of the preset)")
        if int(y.min()) < 0 or int(y.max()) >= n_classes[k]:
            raise ModelError(f"{what} labels[{k!r}] hold class ids outside [0, {n_classes[k]})",
                             "a class id is out of range", "fix n_classes or the labels")


def pretrain_vision(out_dir: str | Path, images: list, labels: dict[str, torch.Tensor], n_classes: dict[str, int],
                    preset: str | dict = "tiny", tokenizer_texts: list[str] | None = None,
                    eval_images: list | None = None, eval_labels: dict[str, torch.Tensor] | None = None,
                    steps: int = 1200, lr: float = 1e-3, batch_size: int = 64, warmup_steps: int = 30,
                    feature_rms: float | None = 16.0, seed: int = 0, eval_every: int = 200,
                    progress: bool = True, resume: bool = True) -> dict:
    """Train vision tower + projector on dense labels; save an HF checkpoint to out_dir. Returns the summary
    (held-out accuracy per head on tokens whose label is not 0, per eval point; content_hash).

    feature_rms: after training, the projector's last layer is rescaled so image features have this RMS per
    channel (the heads' view is unchanged up to scale). Measured with a from-scratch LLM (docs/LOG.md): features
    at RMS 0.06-1 were ignored, at 3.6 used, at 14-44 used best (in a pre-norm LLM a large-norm image position
    keeps its feature nearly unchanged through the residual stream). None keeps them as trained."""
    from tqdm.auto import tqdm

    from vila2_model.model import build_model
    from vila2_model.presets import load_preset
    from vila2_model.tokenizer import build_processor, image_seq_length

    out = Path(out_dir)
    p = load_preset(preset)
    tokens = image_seq_length(p)
    _check(images, labels, n_classes, tokens, "training")
    if eval_images:
        _check(eval_images, eval_labels or {}, n_classes, tokens, "eval")
    # The resume key covers the data's content (images, labels, tokenizer text), not just its size.
    data = hashlib.sha256()
    for im in images:
        data.update(im.tobytes())
    for k in sorted(labels):
        data.update(k.encode() + labels[k].numpy().tobytes())
    for t in tokenizer_texts or []:
        data.update(t.encode() + b"\0")
    key = json.dumps({"preset": p, "n": len(images), "n_classes": n_classes, "steps": steps, "lr": lr,
                      "batch_size": batch_size, "warmup_steps": warmup_steps, "feature_rms": feature_rms,
                      "seed": seed, "data": data.hexdigest()}, sort_keys=True)
    done = out / DONE
    if resume and done.is_file():
        prev = json.loads(done.read_text())
        if prev.get("key") == key and prev.get("content_hash") == content_hash(out):
            if progress:
                print(f"[vision] already pretrained with these arguments: reusing {out}")
            return prev

    torch.manual_seed(seed)
    processor = build_processor(list(tokenizer_texts or []) or ["an image"], None, p)
    model = build_model(p, processor, seed=seed)
    m = model.model
    hidden = model.config.text_config.hidden_size
    torch.manual_seed(seed)
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(hidden, n) for k, n in n_classes.items()})

    def pixels(imgs):
        return processor.image_processor(images=imgs, return_tensors="pt")["pixel_values"]

    def features(px):
        return m.get_image_features(pixel_values=px, vision_feature_layer=-1,
                                    vision_feature_select_strategy="default").pooler_output

    px_train = pixels(images)
    px_eval = pixels(eval_images) if eval_images else None

    def evaluate() -> dict:
        m.eval()
        with torch.no_grad():
            f = torch.cat([features(px_eval[i:i + 256]) for i in range(0, len(px_eval), 256)])
        m.train()
        res = {}
        for k, h in heads.items():
            y, pred = eval_labels[k], h(f).argmax(-1)
            obj = y > 0
            res[k] = round(((pred == y) & obj).sum().item() / max(1, obj.sum().item()), 4)
        return res

    for prm in model.parameters():
        prm.requires_grad_(False)
    m.vision_tower.requires_grad_(True)
    m.multi_modal_projector.requires_grad_(True)
    params = [q for q in model.parameters() if q.requires_grad] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    history, losses, t0 = [], [], time.time()
    m.train()
    for step in tqdm(range(steps), desc="vision", disable=not progress, leave=False):
        if px_eval is not None and eval_every and step % eval_every == 0:
            history.append({"step": step, **evaluate()})
        scale = (step + 1) / warmup_steps if step < warmup_steps else \
            0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=gen)
        f = features(px_train[idx])
        loss = sum(torch.nn.functional.cross_entropy(h(f).reshape(-1, n_classes[k]), labels[k][idx].reshape(-1))
                   for k, h in heads.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    final = evaluate() if px_eval is not None else {}
    if px_eval is not None:
        history.append({"step": steps, **final})
    if feature_rms is not None:
        m.eval()
        with torch.no_grad():
            rms = features(px_train[:256]).pow(2).mean().sqrt().item()
            lin = m.multi_modal_projector.linear_2
            lin.weight.mul_(feature_rms / rms)
            lin.bias.mul_(feature_rms / rms)
    for prm in model.parameters():
        prm.requires_grad_(True)
    model.eval()
    summary = {"key": key, "steps": steps, "seconds": round(time.time() - t0, 2),
               "first_loss": losses[0] if losses else None,
               "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else None,
               "eval_accuracy": final, "history": history}
    summary["content_hash"] = save_checkpoint(model, processor, out, summary)
    done.write_text(json.dumps(summary, indent=1))
    return summary
