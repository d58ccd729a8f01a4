"""Three-stage training from scratch (align -> pretrain -> SFT) and specialist fine-tuning from a stage-2 checkpoint.

The signature of train_vlm is the config; YAML recipes in presets/*.yaml map onto it (unknown keys fail).
Recipe (method §3): AdamW, cosine schedule, 3% warmup, weight decay 0. The paper's lrs (1e-3 / 5e-5 / 2e-5) are
for a pretrained 8B LLM; a from-scratch 4M-parameter model learns nothing at 5e-5, so the tiny defaults keep the
stage-1 rate and raise stages 2-3 (measured on the synthetic world; see docs/readme/model.md).

Which parameters train (VILA freezes the vision tower in stages 1-2 because SigLIP is pretrained; ours is
random, so stage 2 trains it too unless train_vision_in_pretrain=False, which is the right choice when starting
from a pretrained vision tower via init_from; freeze_vision=True keeps it frozen in every stage, as the loop does
with the vision foundation of pipelines/foundation.py):
  align    projector only            (LLM and vision frozen)
  pretrain projector + LLM (+ vision)
  sft      everything (but the vision tower under freeze_vision)
"""
from __future__ import annotations

import inspect
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch

from vila2_model.checkpoint import content_hash, save_checkpoint
from vila2_model.data import Encoded, Sample, collate, encode_samples, load_conversations, texts_of
from vila2_model.errors import ModelError, require

STAGES = ("align", "pretrain", "sft")


def _samples(data: str | Path | list[Sample] | None) -> list[Sample]:
    if data is None:
        return []
    if isinstance(data, (str, Path)):
        return load_conversations(data)
    return list(data)


def _set_trainable(model, stage: str, train_vision_in_pretrain: bool, freeze_vision: bool = False) -> None:
    m = model.model
    for p in model.parameters():
        p.requires_grad_(stage in ("sft", "specialist"))
    if stage == "align":
        m.multi_modal_projector.requires_grad_(True)
    elif stage == "pretrain":
        m.multi_modal_projector.requires_grad_(True)
        m.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
        m.vision_tower.requires_grad_(train_vision_in_pretrain)
    if freeze_vision:
        m.vision_tower.requires_grad_(False)


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def run_stage(model, processor, enc: Encoded, out_dir: str | Path, *, stage: str, epochs: float, lr: float,
              batch_size: int = 32, seed: int = 0, warmup_ratio: float = 0.03, weight_decay: float = 0.0,
              train_vision_in_pretrain: bool = True, freeze_vision: bool = False,
              max_steps: int | None = None, device: str = "cpu",
              bf16: bool | None = None, deepspeed_config: str | dict | None = None, grad_clip: float = 1.0,
              log_every: int = 10, progress: bool = True, group_by_length: bool = True,
              step_callback: Callable[[int, torch.nn.Module], None] | None = None, meta: dict | None = None) -> dict:
    """Train `model` in place for one stage and save it to out_dir. Returns the stage summary.
    step_callback(step, model) runs before each optimizer step's forward pass (tests use it to look at the
    weights a stage starts from)."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _set_trainable(model, stage, train_vision_in_pretrain, freeze_vision)
    n = len(enc.input_ids)
    if n == 0:
        raise ModelError(f"stage {stage} has no training samples", "its data set is empty",
                         "pass a non-empty training set or set its epochs to 0")
    # The sample order: whole seeded permutations, cut at epochs * n (fractional epochs take a prefix).
    g = torch.Generator().manual_seed(seed * 1000 + STAGES.index(stage) if stage in STAGES else seed * 1000 + 7)
    n_samples = max(batch_size, int(round(epochs * n)))
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(n_samples / n))])[:n_samples]
    if group_by_length:
        # Sort within windows of 8 batches by length, then shuffle the batches: much less padding per batch,
        # the same samples per epoch, still seeded (HF's group_by_length idea).
        lengths = [len(x) for x in enc.input_ids]
        batches = []
        for w in range(0, n_samples, 8 * batch_size):
            win = sorted(order[w:w + 8 * batch_size].tolist(), key=lambda i: lengths[i])
            batches += [win[i:i + batch_size] for i in range(0, len(win), batch_size)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    else:
        batches = [order[i:i + batch_size].tolist() for i in range(0, n_samples, batch_size)]
    if max_steps is not None:
        batches = batches[:max_steps]
    total, warmup = len(batches), max(1, int(round(warmup_ratio * len(batches))))

    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay,
                            foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, total, warmup))
    use_bf16 = (device != "cpu") if bf16 is None else bf16
    engine = None
    if deepspeed_config:
        ds = require("deepspeed", "gpu", "DeepSpeed ZeRO training")
        cfg = json.loads(Path(deepspeed_config).read_text()) if isinstance(deepspeed_config, (str, Path)) \
            else dict(deepspeed_config)
        cfg.setdefault("train_micro_batch_size_per_gpu", batch_size)
        cfg.setdefault("gradient_accumulation_steps", 1)
        cfg.setdefault("gradient_clipping", grad_clip)
        cfg.setdefault("bf16", {"enabled": use_bf16})
        engine, opt, _, sched = ds.initialize(model=model, model_parameters=params, optimizer=opt,
                                              lr_scheduler=sched, config=cfg)
    pad = processor.tokenizer.pad_token_id
    log = (out / "loss_log.jsonl").open("w")
    model.train()
    t0, seen, losses = time.time(), 0, []
    bar = tqdm(batches, desc=stage, disable=not progress, leave=False)
    for step, idx in enumerate(bar):
        if step_callback is not None:
            step_callback(step, model)
        b = {k: v.to(device) for k, v in collate(enc, idx, pad).items()}
        labels = b.pop("labels")
        target = labels[:, 1:]
        keep = target != -100
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=use_bf16):
            if engine is not None:   # ZeRO-3 gathers parameters in the engine's forward: go through it
                logits = engine(**b).logits[:, :-1][keep]
            else:
                # The LM head only where the loss is taken (answers are a minority of positions): the
                # vocabulary projection was about a quarter of the tiny model's training FLOPs.
                hidden = model.model(**b).last_hidden_state[:, :-1]
                logits = model.lm_head(hidden[keep])
        loss = torch.nn.functional.cross_entropy(logits.float(), target[keep])
        if engine is not None:
            engine.backward(loss)
            engine.step()
        else:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
        seen += len(idx)
        losses.append(loss.item())
        if step % log_every == 0 or step == total - 1:
            rec = {"stage": stage, "step": step, "loss": round(losses[-1], 5), "lr": sched.get_last_lr()[0],
                   "samples": seen, "samples_per_s": round(seen / (time.time() - t0), 2)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    log.close()
    model.eval()
    elapsed = time.time() - t0
    summary = {"stage": stage, "steps": total, "samples": seen, "seconds": round(elapsed, 2),
               "samples_per_s": round(seen / max(elapsed, 1e-9), 2), "first_loss": losses[0],
               "final_loss": sum(losses[-5:]) / len(losses[-5:]), "lr": lr, "epochs": epochs}
    h = save_checkpoint(model.module if hasattr(model, "module") else model, processor, out,
                        {**(meta or {}), **summary})
    summary["content_hash"] = h
    return summary


def train_vlm(out_dir: str | Path,
              pretrain_data: str | Path | list[Sample],
              sft_data: str | Path | list[Sample],
              preset: str | dict = "tiny",
              seed: int = 0,
              epochs_align: float = 0.25,      # fraction of the pretraining set used to align the projector
              epochs_pretrain: float = 2.0,
              epochs_sft: float = 6.0,
              lr_align: float = 1e-3,          # the paper's stage-1 rate
              lr_pretrain: float = 5e-4,       # paper 5e-5 for a pretrained LLM; from scratch needs more (2e-3: worse loss)
              lr_sft: float = 1e-3,            # paper 2e-5; same reason
              batch_size: int = 32,
              warmup_ratio: float = 0.03,
              weight_decay: float = 0.0,
              train_vision_in_pretrain: bool = True,
              freeze_vision: bool = False,    # keep the vision tower frozen in every stage (a pretrained tower)
              sft_in_pretrain: float = 0.0,   # copies of the SFT set mixed into stage 2 (VILA's ShareGPT4V share)
              tokenizer_texts: list[str] | None = None,   # extra text for the tokenizer (e.g. a user's captions)
              init_from: str | Path | None = None,        # a local HF InternVL checkpoint instead of from scratch
              max_len: int | None = None,
              max_steps: int | None = None,               # per stage; for tests and smoke runs
              device: str = "cpu",
              bf16: bool | None = None,                   # default: on for GPU, off on CPU
              attn_implementation: str | None = None,     # e.g. "flash_attention_2" on GPU
              deepspeed_config: str | dict | None = None,  # ZeRO config file (gpu extra)
              progress: bool = True,
              resume: bool = True) -> dict[str, str]:
    """Train align -> pretrain -> SFT from scratch; returns {stage: checkpoint dir} (out_dir/<stage>).
    With resume, a stage whose checkpoint was written by the same arguments is reused, not retrained."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vila2_model.model import build_model
    from vila2_model.presets import load_preset
    from vila2_model.tokenizer import build_processor

    args = {k: v for k, v in locals().items() if k not in ("pretrain_data", "sft_data", "tokenizer_texts")
            and not k.startswith("Auto") and k not in ("build_model", "load_preset", "build_processor")}
    out = Path(out_dir)
    torch.manual_seed(seed)
    pre, sft = _samples(pretrain_data), _samples(sft_data)
    data_desc = {"pretrain": str(pretrain_data) if isinstance(pretrain_data, (str, Path)) else f"{len(pre)} samples",
                 "sft": str(sft_data) if isinstance(sft_data, (str, Path)) else f"{len(sft)} samples"}
    key = json.dumps({**args, **data_desc, "n_pretrain": len(pre), "n_sft": len(sft)}, sort_keys=True, default=str)

    if init_from is not None:
        processor = AutoProcessor.from_pretrained(str(init_from))
        model = AutoModelForImageTextToText.from_pretrained(str(init_from), attn_implementation=attn_implementation)
        preset_name = str(init_from)
    else:
        p = load_preset(preset)
        preset_name = p["name"]
        processor = build_processor(texts_of(pre) + texts_of(sft) + list(tokenizer_texts or []), None, p)
        model = build_model(p, processor, seed=seed, attn_implementation=attn_implementation)

    # VILA's stage-2 blend includes high-quality detailed captions (ShareGPT4V) beside the web pairs; at toy
    # scale the SFT set plays that part: whole copies, then a seeded share for the fractional part.
    mix = sft * int(sft_in_pretrain)
    if sft_in_pretrain % 1:
        gmix = torch.Generator().manual_seed(seed)
        mix += [sft[i] for i in torch.randperm(len(sft), generator=gmix)[:int(round(len(sft) * (sft_in_pretrain % 1)))]]
    stage_data = {"align": pre, "pretrain": pre + mix if mix else pre, "sft": sft}
    epochs = {"align": epochs_align, "pretrain": epochs_pretrain, "sft": epochs_sft}
    lrs = {"align": lr_align, "pretrain": lr_pretrain, "sft": lr_sft}
    encoded: dict[int, Encoded] = {}
    result = {}
    for stage in STAGES:
        d = out / stage
        if epochs[stage] <= 0:
            continue
        stage_key = f"{key}|{stage}"
        done = d / "vila2_train.json"
        if resume and done.is_file() and json.loads(done.read_text()).get("key") == stage_key \
                and json.loads(done.read_text()).get("content_hash") == content_hash(d):
            # Resumable by construction: load the finished stage and go on from it.
            model = AutoModelForImageTextToText.from_pretrained(str(d))
            processor = AutoProcessor.from_pretrained(str(d))
            result[stage] = str(d)
            if progress:
                print(f"[{stage}] already trained with these arguments: reusing {d}")
            continue
        data = stage_data[stage]
        if id(data) not in encoded:
            encoded[id(data)] = encode_samples(processor, data, max_len)
        summary = run_stage(model, processor, encoded[id(data)], d, stage=stage, epochs=epochs[stage],
                            lr=lrs[stage], batch_size=batch_size, seed=seed, warmup_ratio=warmup_ratio,
                            weight_decay=weight_decay, train_vision_in_pretrain=train_vision_in_pretrain,
                            freeze_vision=freeze_vision,
                            max_steps=max_steps, device=device, bf16=bf16, deepspeed_config=deepspeed_config,
                            progress=progress,
                            meta={"key": stage_key, "preset": preset_name, "data": data_desc, "args": args})
        if progress:
            print(f"[{stage}] {summary['steps']} steps, {summary['samples_per_s']:.1f} samples/s, "
                  f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}, saved {d}")
        result[stage] = str(d)
    return result


def finetune_specialist(out_dir: str | Path,
                        stage2_ckpt: str | Path,
                        task_data: str | Path | list[Sample],
                        caption_data: str | Path | list[Sample] | None = None,
                        mix_ratio: float = 1.0,   # caption samples per task sample (keeps the specialist writing prose)
                        seed: int = 0,
                        epochs: float = 4.0,
                        lr: float = 1e-3,
                        batch_size: int = 32,
                        warmup_ratio: float = 0.03,
                        max_steps: int | None = None,
                        device: str = "cpu",
                        bf16: bool | None = None,
                        deepspeed_config: str | dict | None = None,
                        progress: bool = True,
                        step_callback: Callable[[int, torch.nn.Module], None] | None = None) -> str:
    """Fine-tune all parameters of a stage-2 (pretrain) checkpoint on task data mixed with caption data
    (method §2). Returns the checkpoint dir (out_dir)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    task, caps = _samples(task_data), _samples(caption_data)
    if not task:
        raise ModelError("specialist fine-tuning got no task samples", "the task data set is empty",
                         "pass the specialist's task set (e.g. world/tasks/spatial)")
    n_caps = int(round(mix_ratio * len(task))) if caps else 0
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(caps), (n_caps,), generator=g).tolist() if n_caps > len(caps) \
        else torch.randperm(len(caps), generator=g)[:n_caps].tolist()
    mixed = task + [caps[i] for i in pick]
    processor = AutoProcessor.from_pretrained(str(stage2_ckpt))
    model = AutoModelForImageTextToText.from_pretrained(str(stage2_ckpt))
    enc = encode_samples(processor, mixed)
    run_stage(model, processor, enc, out_dir, stage="specialist", epochs=epochs, lr=lr, batch_size=batch_size,
              seed=seed, warmup_ratio=warmup_ratio, max_steps=max_steps, device=device, bf16=bf16,
              deepspeed_config=deepspeed_config, progress=progress, step_callback=step_callback,
              meta={"parent": str(stage2_ckpt), "parent_hash": content_hash(stage2_ckpt),
                    "task": str(task_data) if isinstance(task_data, (str, Path)) else f"{len(task)} samples",
                    "n_task": len(task), "n_caption": n_caps})
    return str(out_dir)


def load_recipe(path_or_name: str | Path, fn: Callable = train_vlm) -> dict:
    """A YAML recipe (a file, or a name in presets/) as keyword arguments for `fn`; unknown keys fail loudly."""
    import yaml

    from vila2_model.presets import PRESET_DIR, list_recipes

    p = Path(path_or_name)
    if not p.is_file():
        p = PRESET_DIR / f"{path_or_name}.yaml"
    if not p.is_file():
        raise ModelError(f"training recipe {path_or_name!r} not found", "no such YAML file or preset recipe",
                         f"pass a .yaml path or one of: {', '.join(list_recipes())}")
    cfg = yaml.safe_load(p.read_text()) or {}
    valid = set(inspect.signature(fn).parameters)
    unknown = sorted(set(cfg) - valid)
    if unknown:
        raise ModelError(f"unknown key(s) {unknown} in recipe {p.name}",
                         f"{fn.__name__} takes no such argument",
                         f"use only: {', '.join(sorted(valid))}")
    return cfg
