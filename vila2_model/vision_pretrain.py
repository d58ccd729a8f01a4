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
    from vila2_model.presets import load_preset
    from vila2_model.tokenizer import image_seq_length

    out = Path(out_dir)
    p = load_preset(preset)
    tokens = image_seq_length(p)
    _check(images, labels, n_classes, tokens, "training")
    if eval_images:
        _check(eval_images, eval_labels or {}, n_classes, tokens, "eval")
    key = _resume_key(p, images, labels, n_classes, tokenizer_texts,
                      {"steps": steps, "lr": lr, "batch_size": batch_size, "warmup_steps": warmup_steps,
                       "feature_rms": feature_rms, "seed": seed})
    prev = _finished(out, key) if resume else None
    if prev is not None:
        if progress:
            print(f"[vision] already pretrained with these arguments: reusing {out}")
        return prev

    run = _DenseRun(p, tokenizer_texts, n_classes, seed)
    px_train = run.pixels(images)
    px_eval = run.pixels(eval_images) if eval_images else None
    t0 = time.time()
    history, losses = _train_heads(run, px_train, labels, px_eval, eval_labels, steps, lr, batch_size,
                                   warmup_steps, seed, eval_every, progress)
    final = run.accuracy(px_eval, eval_labels) if px_eval is not None else {}
    if px_eval is not None:
        history.append({"step": steps, **final})
    if feature_rms is not None:
        run.rescale_features(px_train[:256], feature_rms)
    for prm in run.model.parameters():   # the saved checkpoint trains as a whole later
        prm.requires_grad_(True)
    summary = {"key": key, "steps": steps, "seconds": round(time.time() - t0, 2),
               "first_loss": losses[0] if losses else None,
               "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else None,
               "eval_accuracy": final, "history": history}
    run.model.eval()
    summary["content_hash"] = save_checkpoint(run.model, run.processor, out, summary)
    (out / DONE).write_text(json.dumps(summary, indent=1))
    return summary


def _resume_key(preset: dict, images, labels, n_classes, tokenizer_texts, args: dict) -> str:
    """What decides the result: the preset, the arguments and the data's content (images, labels, tokenizer
    text), not just its size."""
    data = hashlib.sha256()
    for im in images:
        data.update(im.tobytes())
    for k in sorted(labels):
        data.update(k.encode() + labels[k].numpy().tobytes())
    for t in tokenizer_texts or []:
        data.update(t.encode() + b"\0")
    return json.dumps({"preset": preset, "n": len(images), "n_classes": n_classes, **args,
                       "data": data.hexdigest()}, sort_keys=True)


def _finished(out: Path, key: str) -> dict | None:
    """The summary of a finished run in `out` with the same key whose checkpoint is intact, else None."""
    done = out / DONE
    if not done.is_file():
        return None
    prev = json.loads(done.read_text())
    return prev if prev.get("key") == key and prev.get("content_hash") == content_hash(out) else None


class _DenseRun:
    """A fresh model with linear heads on its image features: only the tower, the projector and the heads train."""

    def __init__(self, preset: dict, tokenizer_texts, n_classes: dict[str, int], seed: int):
        from vila2_model.model import build_model
        from vila2_model.tokenizer import build_processor

        torch.manual_seed(seed)
        self.processor = build_processor(list(tokenizer_texts or []) or ["an image"], None, preset)
        self.model = build_model(preset, self.processor, seed=seed)
        self.m = self.model.model
        hidden = self.model.config.text_config.hidden_size
        torch.manual_seed(seed)
        self.heads = torch.nn.ModuleDict({k: torch.nn.Linear(hidden, n) for k, n in n_classes.items()})
        self.n_classes = n_classes
        for prm in self.model.parameters():
            prm.requires_grad_(False)
        self.m.vision_tower.requires_grad_(True)
        self.m.multi_modal_projector.requires_grad_(True)

    def trainable(self) -> list:
        return [q for q in self.model.parameters() if q.requires_grad] + list(self.heads.parameters())

    def pixels(self, imgs):
        return self.processor.image_processor(images=imgs, return_tensors="pt")["pixel_values"]

    def features(self, px):
        return self.m.get_image_features(pixel_values=px, vision_feature_layer=-1,
                                         vision_feature_select_strategy="default").pooler_output

    def loss(self, px, labels: dict, idx):
        f = self.features(px[idx])
        return sum(torch.nn.functional.cross_entropy(h(f).reshape(-1, self.n_classes[k]), labels[k][idx].reshape(-1))
                   for k, h in self.heads.items())

    def accuracy(self, px_eval, eval_labels) -> dict:
        """Held-out accuracy per head, on the tokens that hold an object (label > 0)."""
        self.m.eval()
        with torch.no_grad():
            f = torch.cat([self.features(px_eval[i:i + 256]) for i in range(0, len(px_eval), 256)])
        self.m.train()
        res = {}
        for k, h in self.heads.items():
            y, pred = eval_labels[k], h(f).argmax(-1)
            obj = y > 0
            res[k] = round(((pred == y) & obj).sum().item() / max(1, obj.sum().item()), 4)
        return res

    def rescale_features(self, px, feature_rms: float) -> None:
        """Scale the projector's last layer so image features have RMS `feature_rms`."""
        self.m.eval()
        with torch.no_grad():
            rms = self.features(px).pow(2).mean().sqrt().item()
            lin = self.m.multi_modal_projector.linear_2
            lin.weight.mul_(feature_rms / rms)
            lin.bias.mul_(feature_rms / rms)


def _train_heads(run: _DenseRun, px_train, labels, px_eval, eval_labels, steps, lr, batch_size, warmup_steps,
                 seed, eval_every, progress) -> tuple[list, list]:
    """AdamW with linear warm-up then cosine decay, random batches; returns (eval history, losses)."""
    from tqdm.auto import tqdm

    params = run.trainable()
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    n = px_train.shape[0]
    history, losses = [], []
    run.m.train()
    for step in tqdm(range(steps), desc="vision", unit="step", disable=not progress, leave=False):
        if px_eval is not None and eval_every and step % eval_every == 0:
            history.append({"step": step, **run.accuracy(px_eval, eval_labels)})
        scale = (step + 1) / warmup_steps if step < warmup_steps else \
            0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        loss = run.loss(px_train, labels, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    return history, losses
