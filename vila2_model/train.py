"""Three-stage training (align -> pretrain -> SFT) and specialist fine-tuning from a stage-2 checkpoint, on one
process or data-parallel on N (DDP, or DeepSpeed ZeRO from a config in the recipe).

The signature of train_vlm is the config; YAML recipes in presets/*.yaml map onto it (unknown keys fail).
Recipe (method §3): AdamW, cosine schedule, 3% warmup, weight decay 0. The paper's lrs (1e-3 / 5e-5 / 2e-5) are
for a pretrained 8B LLM; a from-scratch 4M-parameter model learns nothing at 5e-5, so the tiny defaults keep the
stage-1 rate and raise stages 2-3 (measured on the synthetic world; see docs/model.md).

Where a round starts (every round starts here again, never from the previous round's weights):
  from scratch             a preset's shapes, random weights, a tokenizer trained on the round's text
  init_from=CKPT           a whole InternVL-format checkpoint (e.g. the vision foundation)
  vision_from + llm_from   a pretrained vision tower and a pretrained LLM with a fresh projector, as VILA does

Which parameters train (VILA freezes the vision tower in stages 1-2 because SigLIP is pretrained; a random
tower trains in stage 2 too unless train_vision_in_pretrain=False, the right choice for a pretrained tower;
freeze_vision=True keeps it frozen in every stage, as the loop does with the vision foundation):
  align    projector only            (LLM and vision frozen)
  pretrain projector + LLM (+ vision)
  sft      everything (but the vision tower under freeze_vision)

Data parallel: `batch_size` is the global batch. Every rank computes the same seeded plan of global batches;
rank r trains on batch[r::N]; the loss is normalised by the global count of supervised tokens, so the
all-reduced gradient equals the one-process gradient of the same batch (tests/test_train_ranks.py). Only rank 0
writes checkpoints and logs.
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
from vila2_model.distributed import (Ranks, barrier, broadcast, env_world_size, gather, init_from_env, launch,
                                     rank_device)
from vila2_model.errors import ModelError, require

STAGES = ("align", "pretrain", "sft")
# Arguments added after checkpoints existed: left out of the resume key while at their defaults, so finished
# stages written before them are still reused. `nproc` and `micro_batch_size` never enter it (how the global
# batches are spread over processes and accumulation steps does not change what is trained).
_KEY_DEFAULTS = {"vision_from": None, "llm_from": None, "record_samples": False, "gradient_checkpointing": False}
_NOT_IN_KEY = ("nproc", "micro_batch_size")


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
              batch_size: int = 32,            # the global batch (all ranks together)
              micro_batch_size: int | None = None,   # per rank per forward; fewer = gradient accumulation
              gradient_checkpointing: bool = False,  # recompute activations in backward (real sizes)
              warmup_ratio: float = 0.03,
              weight_decay: float = 0.0,
              train_vision_in_pretrain: bool = True,
              freeze_vision: bool = False,    # keep the vision tower frozen in every stage (a pretrained tower)
              sft_in_pretrain: float = 0.0,   # copies of the SFT set mixed into stage 2 (VILA's ShareGPT4V share)
              tokenizer_texts: list[str] | None = None,   # extra text for the tokenizer (e.g. a user's captions)
              init_from: str | Path | None = None,        # a local HF InternVL checkpoint instead of from scratch
              vision_from: str | Path | None = None,      # a pretrained SigLIP / InternViT checkpoint (with llm_from)
              llm_from: str | Path | None = None,         # a pretrained Qwen2 / Llama checkpoint + its tokenizer
              max_len: int | None = None,
              max_steps: int | None = None,               # per stage; for tests and smoke runs
              device: str = "cpu",
              bf16: bool | None = None,                   # default: on for GPU, off on CPU
              attn_implementation: str | None = None,     # None: flash_attention_2 on GPU when installed, else sdpa
              deepspeed_config: str | dict | None = None,  # ZeRO config: a JSON file or the recipe's mapping
              nproc: int = 1,                             # data-parallel processes on this machine (torchrun: ignored)
              record_samples: bool = False,               # write each rank's sample ids per stage (audits, tests)
              progress: bool = True,
              resume: bool = True) -> dict[str, str]:
    """Train align -> pretrain -> SFT; returns {stage: checkpoint dir} (out_dir/<stage>).
    With resume, a stage whose checkpoint was written by the same arguments is reused, not retrained.
    nproc > 1 starts that many processes here (gloo on CPU, nccl on GPU) and returns rank 0's result; under
    torchrun (WORLD_SIZE set) every rank calls this function and nproc is not used."""
    args = {k: v for k, v in locals().items() if k not in ("pretrain_data", "sft_data", "tokenizer_texts")}
    if nproc > 1 and env_world_size() == 1:
        return launch(nproc, "vila2_model.train:train_vlm",
                      {"pretrain_data": pretrain_data, "sft_data": sft_data, "tokenizer_texts": tokenizer_texts,
                       **args}, Path(out_dir) / ".ranks")
    r = init_from_env(device)
    out = Path(out_dir)
    torch.manual_seed(seed)
    pre, sft = _samples(pretrain_data), _samples(sft_data)
    data_desc = {"pretrain": str(pretrain_data) if isinstance(pretrain_data, (str, Path)) else f"{len(pre)} samples",
                 "sft": str(sft_data) if isinstance(sft_data, (str, Path)) else f"{len(sft)} samples"}
    key_args = {k: v for k, v in args.items() if k not in _NOT_IN_KEY
                and not (k in _KEY_DEFAULTS and v == _KEY_DEFAULTS[k])}
    key = json.dumps({**key_args, **data_desc, "n_pretrain": len(pre), "n_sft": len(sft)}, sort_keys=True,
                     default=str)
    say = print if progress and r.main else (lambda *_: None)

    model, processor, origin = starting_model(preset, pre, sft, tokenizer_texts, init_from=init_from,
                                              vision_from=vision_from, llm_from=llm_from, seed=seed,
                                              attn_implementation=attn_implementation, device=device, ranks=r)
    say(_execution_line(device, r, bf16, model, deepspeed_config))
    stage_data = _stage_data(pre, sft, sft_in_pretrain, seed)
    epochs = {"align": epochs_align, "pretrain": epochs_pretrain, "sft": epochs_sft}
    lrs = {"align": lr_align, "pretrain": lr_pretrain, "sft": lr_sft}
    encoded: dict[int, Encoded] = {}
    result = {}
    for stage in STAGES:
        d = out / stage
        if epochs[stage] <= 0:
            continue
        stage_key = f"{key}|{stage}"
        if resume and broadcast(_finished(d, stage_key), r):
            # Resumable by construction: load the finished stage and go on from it.
            model, processor = _load(d, attn_implementation)
            result[stage] = str(d)
            say(f"[{stage}] already trained with these arguments: reusing {d}")
            continue
        data = stage_data[stage]
        if id(data) not in encoded:
            encoded[id(data)] = encode_samples(processor, data, max_len)
        summary = run_stage(model, processor, encoded[id(data)], d, stage=stage, epochs=epochs[stage],
                            lr=lrs[stage], batch_size=batch_size, seed=seed, warmup_ratio=warmup_ratio,
                            weight_decay=weight_decay, train_vision_in_pretrain=train_vision_in_pretrain,
                            freeze_vision=freeze_vision, max_steps=max_steps, device=device, bf16=bf16,
                            deepspeed_config=deepspeed_config, progress=progress,
                            sample_ids=[s.id for s in data] if record_samples else None,
                            micro_batch_size=micro_batch_size, gradient_checkpointing=gradient_checkpointing,
                            meta={"key": stage_key, "preset": origin, "data": data_desc, "args": args})
        say(f"[{stage}] {summary['steps']} steps, {summary['samples_per_s']:.1f} samples/s on {r.world} "
            f"rank(s), loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}, saved {d}")
        if deepspeed_config:
            # The engine partitioned (ZeRO-3) or re-typed the module; the next stage starts from the saved,
            # gathered checkpoint, as a resumed run would.
            model, processor = _load(d, attn_implementation)
        result[stage] = str(d)
    return result


def _execution_line(device: str, r: Ranks, bf16: bool | None, model, deepspeed_config) -> str:
    """Says how this run executes: ranks, device, precision, attention kernel (and how to get flash-attn)."""
    import importlib.util

    cuda = str(device).startswith("cuda")
    attn = getattr(model.config, "_attn_implementation", None) or "sdpa"
    line = (f"[train] {r.world} rank(s) on {device}, {'bf16' if (cuda if bf16 is None else bf16) else 'fp32'}, "
            f"attention {attn}")
    if cuda and attn != "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        line += " (flash-attn not installed: pip install flash-attn --no-build-isolation)"
    if deepspeed_config:
        line += ", DeepSpeed"
    return line


def _samples(data: str | Path | list[Sample] | None) -> list[Sample]:
    if data is None:
        return []
    if isinstance(data, (str, Path)):
        return load_conversations(data)
    return list(data)


def starting_model(preset, pre: list[Sample], sft: list[Sample], tokenizer_texts, *, init_from=None,
                   vision_from=None, llm_from=None, seed: int = 0, attn_implementation: str | None = None,
                   device: str = "cpu", ranks: Ranks = Ranks()):
    """(model, processor, origin) a round starts from: a whole checkpoint, pretrained parts composed with a
    fresh projector, or a preset from scratch. Every rank gets rank 0's processor (one tokenizer for all)."""
    from vila2_model.model import attention_for, build_model, compose_model
    from vila2_model.presets import load_preset
    from vila2_model.tokenizer import build_processor

    attn = attention_for(device, attn_implementation)
    if init_from is not None and (vision_from or llm_from):
        raise ModelError("init_from and vision_from/llm_from were both given",
                         "a round starts either from one whole checkpoint or from pretrained parts",
                         "drop init_from, or drop vision_from and llm_from")
    if init_from is not None:
        model, processor = _load(init_from, attn)
        return model, processor, str(init_from)
    if vision_from or llm_from:
        if not (vision_from and llm_from):
            raise ModelError("pretrained parts need both vision_from and llm_from",
                             f"only {'vision_from' if vision_from else 'llm_from'} was given",
                             "pass a SigLIP/InternViT checkpoint as vision_from and a Qwen2/Llama one as llm_from")
        model, processor = compose_model(vision_from, llm_from, seed=seed, attn_implementation=attn)
        return model, processor, f"parts:{vision_from}+{llm_from}"
    p = load_preset(preset)
    processor = broadcast(build_processor(texts_of(pre) + texts_of(sft) + list(tokenizer_texts or []), None, p)
                          if ranks.main else None, ranks)
    return build_model(p, processor, seed=seed, attn_implementation=attn), processor, p["name"]


def _load(ckpt: str | Path, attn_implementation: str | None = None):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModelForImageTextToText.from_pretrained(str(ckpt), **kw), AutoProcessor.from_pretrained(str(ckpt))


def _stage_data(pre: list[Sample], sft: list[Sample], sft_in_pretrain: float, seed: int) -> dict[str, list[Sample]]:
    """VILA's stage-2 blend includes high-quality detailed captions (ShareGPT4V) beside the web pairs; at toy
    scale the SFT set plays that part: whole copies, then a seeded share for the fractional part."""
    mix = sft * int(sft_in_pretrain)
    if sft_in_pretrain % 1:
        gmix = torch.Generator().manual_seed(seed)
        mix += [sft[i] for i in torch.randperm(len(sft), generator=gmix)[:int(round(len(sft) * (sft_in_pretrain % 1)))]]
    return {"align": pre, "pretrain": pre + mix if mix else pre, "sft": sft}


def _finished(d: Path, stage_key: str) -> bool:
    done = d / "vila2_train.json"
    if not done.is_file():
        return False
    meta = json.loads(done.read_text())
    return meta.get("key") == stage_key and meta.get("content_hash") == content_hash(d)


# ---- one stage ---------------------------------------------------------------------------------------------

def run_stage(model, processor, enc: Encoded, out_dir: str | Path, *, stage: str, epochs: float, lr: float,
              batch_size: int = 32, seed: int = 0, warmup_ratio: float = 0.03, weight_decay: float = 0.0,
              train_vision_in_pretrain: bool = True, freeze_vision: bool = False,
              max_steps: int | None = None, device: str = "cpu",
              bf16: bool | None = None, deepspeed_config: str | dict | None = None, grad_clip: float = 1.0,
              log_every: int = 10, progress: bool = True, group_by_length: bool = True,
              step_callback: Callable[[int, torch.nn.Module], None] | None = None, meta: dict | None = None,
              sample_ids: list[str] | None = None, micro_batch_size: int | None = None,
              gradient_checkpointing: bool = False) -> dict:
    """Train `model` in place for one stage on this rank's share of each global batch; rank 0 saves it to
    out_dir. Returns the stage summary (on every rank). step_callback(step, model) runs before each optimizer
    step's forward pass (tests use it to look at the weights a stage starts from). sample_ids: write which
    samples each rank trained on to out_dir/samples_seen.json."""
    r = init_from_env(device)
    device = rank_device(device, r)
    _set_trainable(model, stage, train_vision_in_pretrain, freeze_vision)
    if len(enc.input_ids) == 0:
        raise ModelError(f"stage {stage} has no training samples", "its data set is empty",
                         "pass a non-empty training set or set its epochs to 0")
    plan = batch_plan([len(x) for x in enc.input_ids], stage, epochs, batch_size, seed, group_by_length, max_steps)
    total, warmup = len(plan), max(1, int(round(warmup_ratio * len(plan))))
    use_bf16 = (device != "cpu") if bf16 is None else bf16
    if not deepspeed_config:   # a DeepSpeed engine casts (bf16) and places the module itself: half the peak
        model.to(device)
    if gradient_checkpointing:   # recompute each layer's activations in backward: memory for time (real sizes)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    stepper = Stepper(model, lr=lr, weight_decay=weight_decay, total=total, warmup=warmup, grad_clip=grad_clip,
                      batch_size=batch_size, ranks=r, device=device, bf16=use_bf16, deepspeed_config=deepspeed_config,
                      micro_batch_size=micro_batch_size)
    if r.main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    log = (Path(out_dir) / "loss_log.jsonl") if r.main else None
    losses, seen, elapsed = _train_loop(stepper, model, enc, plan, processor.tokenizer.pad_token_id, stage=stage,
                                        ranks=r, device=device, log=log, log_every=log_every,
                                        progress=progress, step_callback=step_callback)
    n_seen = sum(len(b) for b in plan)
    summary = {"stage": stage, "steps": total, "samples": n_seen, "seconds": round(elapsed, 2),
               "samples_per_s": round(n_seen / max(elapsed, 1e-9), 2), "first_loss": losses[0],
               "final_loss": sum(losses[-5:]) / len(losses[-5:]), "lr": lr, "epochs": epochs,
               "schedule": {"kind": "cosine", "peak_lr": lr, "warmup_steps": warmup, "total_steps": total,
                            "betas": [0.9, 0.95], "weight_decay": weight_decay, "grad_clip": grad_clip},
               "ranks": stepper.describe(), "precision": "bf16" if use_bf16 else "fp32",
               "attention": getattr(model.config, "_attn_implementation", None) or "default"}
    if sample_ids is not None:
        per_rank = gather([sample_ids[i] for i in seen], r)
        if r.main:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "samples_seen.json").write_text(json.dumps(
                {"world_size": r.world, "n_samples": len(sample_ids), "per_rank": per_rank}))
    summary["content_hash"] = stepper.save(processor, out_dir, {**(meta or {}), **summary})
    model.eval()
    return summary


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


def batch_plan(lengths: list[int], stage: str, epochs: float, batch_size: int, seed: int,
               group_by_length: bool = True, max_steps: int | None = None) -> list[list[int]]:
    """The global batches of a stage, as sample indices; the same on every rank. Whole seeded permutations
    cut at epochs * n (fractional epochs take a prefix)."""
    n = len(lengths)
    g = torch.Generator().manual_seed(seed * 1000 + STAGES.index(stage) if stage in STAGES else seed * 1000 + 7)
    n_samples = max(batch_size, int(round(epochs * n)))
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(n_samples / n))])[:n_samples]
    if group_by_length:
        # Sort within windows of 8 batches by length, then shuffle the batches: much less padding per batch,
        # the same samples per epoch, still seeded (HF's group_by_length idea).
        batches = []
        for w in range(0, n_samples, 8 * batch_size):
            win = sorted(order[w:w + 8 * batch_size].tolist(), key=lambda i: lengths[i])
            batches += [win[i:i + batch_size] for i in range(0, len(win), batch_size)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    else:
        batches = [order[i:i + batch_size].tolist() for i in range(0, n_samples, batch_size)]
    return batches[:max_steps] if max_steps is not None else batches


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _train_loop(stepper: "Stepper", model, enc: Encoded, plan: list[list[int]], pad: int, *, stage: str,
                ranks: Ranks, device: str, log: Path | None, log_every: int, progress: bool,
                step_callback) -> tuple[list[float], list[int], float]:
    """Every global batch once: this rank's share (batch[rank::world]) forward/backward, one step.
    Returns (global mean loss per step, indices this rank trained on, seconds)."""
    from tqdm.auto import tqdm

    model.train()
    t0, local_sums, counts, seen = time.time(), [], [], []
    fh = log.open("w") if log is not None else None
    # tqdm shows rate and ETA; disable=None turns it off when stderr is not a terminal; only rank 0 draws.
    bar = tqdm(plan, desc=stage, unit="step", leave=False, disable=None if progress and ranks.main else True)
    for step, batch in enumerate(bar):
        if step_callback is not None:
            step_callback(step, model)
        share = batch[ranks.rank::ranks.world]
        # Every rank runs the same number of micro-batches (gradient accumulation); one left without samples (a
        # global batch smaller than the world, or a short last batch) runs a zero-weight sample instead, so
        # every rank still joins each gradient all-reduce.
        micro = [share[i::stepper.n_micro] for i in range(stepper.n_micro)]
        parts = [({k: v.to(device) for k, v in collate(enc, m or batch[:1], pad).items()}, 1.0 if m else 0.0)
                 for m in micro]
        local_sum, count = stepper.step(parts)
        seen += share
        local_sums.append(local_sum)
        counts.append(count)
        if fh is not None and (step % log_every == 0 or step == len(plan) - 1):
            rec = {"stage": stage, "step": step, "loss": round(local_sum / max(count, 1), 5), "lr": stepper.lr(),
                   "samples": sum(len(x) for x in plan[:step + 1]),
                   "samples_per_s": round(sum(len(x) for x in plan[:step + 1]) / (time.time() - t0), 2)}
            if ranks.world > 1:
                rec["loss_rank0"] = rec.pop("loss")   # the global mean per step is in the summary
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            bar.set_postfix(loss=f"{local_sum / max(count, 1):.3f}")
    if fh is not None:
        fh.close()
    elapsed = time.time() - t0
    return stepper.global_means(local_sums, counts), seen, elapsed


class SupervisedLoss(torch.nn.Module):
    """The model's forward up to the loss as one module, so DDP and DeepSpeed see a single forward. The LM head
    runs only where the loss is taken (answers are a minority of positions; the vocabulary projection was about a
    quarter of the tiny model's training FLOPs). Returns the summed cross-entropy and the supervised count."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, pixel_values, labels):
        target = labels[:, 1:]
        keep = target != -100
        hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask,
                                  pixel_values=pixel_values).last_hidden_state[:, :-1]
        logits = self.model.lm_head(hidden[keep])
        return torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="sum")


class Stepper:
    """One optimizer step on this rank's share of a global batch, three ways: one process, DDP, or a DeepSpeed
    engine. The loss is the rank's summed cross-entropy × world / the global supervised count, so after the
    gradient average across ranks every rank holds the gradient of the global batch's mean loss."""

    def __init__(self, model, *, lr, weight_decay, total, warmup, grad_clip, batch_size, ranks: Ranks, device,
                 bf16: bool, deepspeed_config, micro_batch_size: int | None = None):
        self.model, self.ranks, self.device, self.bf16 = model, ranks, device, bf16
        self.batch_size, self.grad_clip = batch_size, grad_clip
        self.per_rank = math.ceil(batch_size / ranks.world)
        self.micro = min(micro_batch_size or self.per_rank, self.per_rank)
        self.n_micro = math.ceil(self.per_rank / self.micro)    # gradient accumulation steps
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.loss_fn = SupervisedLoss(model)
        schedule = lambda s: _cosine(s, total, warmup)  # noqa: E731
        self.engine = self.ds_config = None
        if deepspeed_config:
            self.mode = "deepspeed"
            self._init_deepspeed(deepspeed_config, lr, weight_decay, schedule)
            return
        self.opt = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay, foreach=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        if ranks.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.mode = "ddp"
            cuda = str(device).startswith("cuda")
            self.forward = DistributedDataParallel(self.loss_fn, device_ids=[torch.device(device).index] if cuda
                                                   else None)
        else:
            self.mode = "single"
            self.forward = self.loss_fn

    def _init_deepspeed(self, deepspeed_config, lr, weight_decay, schedule) -> None:
        import os

        if not str(self.device).startswith("cuda"):
            os.environ.setdefault("DS_ACCELERATOR", "cpu")   # DeepSpeed picks its accelerator at import
        ds = require("deepspeed", "distributed", "DeepSpeed ZeRO training")
        cfg = deepspeed_settings(deepspeed_config, batch_size=self.batch_size, world=self.ranks.world,
                                 micro=self.micro, n_micro=self.n_micro, grad_clip=self.grad_clip, bf16=self.bf16,
                                 lr=lr, weight_decay=weight_decay)
        self.ds_config = cfg
        if "optimizer" in cfg:   # DeepSpeed builds it (CPU-Adam under offload, or torch's with torch_adam)
            opt = None
            sched = lambda o: torch.optim.lr_scheduler.LambdaLR(o, schedule)  # noqa: E731
        else:
            opt = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        self.engine, self.opt, _, self.sched = ds.initialize(model=self.loss_fn, model_parameters=self.params,
                                                             optimizer=opt, lr_scheduler=sched, config=cfg)
        self.forward = self.engine

    def step(self, parts: list[tuple[dict, float]]) -> tuple[float, int]:
        """Forward + backward of each (micro-batch, weight), then one optimizer step; returns (this rank's summed
        loss, its supervised count)."""
        from contextlib import nullcontext

        counts = [int((b["labels"][:, 1:] != -100).sum()) if w else 0 for b, w in parts]
        scale = self.ranks.world / max(self._all_sum(sum(counts)), 1)
        if self.engine is not None:
            scale *= len(parts)   # the engine divides each micro-batch's loss by the accumulation steps
        else:
            self.opt.zero_grad(set_to_none=True)
        autocast = self.bf16 and self.engine is None   # a bf16 DeepSpeed engine already runs in bf16
        total = 0.0
        for i, (batch, weight) in enumerate(parts):
            # DDP all-reduces on the last micro-batch's backward only
            sync = self.mode != "ddp" or i == len(parts) - 1
            with nullcontext() if sync else self.forward.no_sync():
                with torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16,
                                    enabled=autocast):
                    summed = self.forward(**batch)
                loss = summed * (weight * scale)
                if self.engine is not None:
                    self.engine.backward(loss)
                    self.engine.step()    # steps the optimizer at the accumulation boundary only
                else:
                    loss.backward()
            total += float(summed.detach()) * weight
        if self.engine is None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.opt.step()
            self.sched.step()
        return total, sum(counts)

    def _all_sum(self, x: float) -> float:
        if self.ranks.world == 1:
            return x
        import torch.distributed as dist

        t = torch.tensor([float(x)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def lr(self) -> float:
        return self.engine.get_lr()[0] if self.engine is not None else self.sched.get_last_lr()[0]

    def global_means(self, local_sums: list[float], counts: list[int]) -> list[float]:
        """The global batch's mean loss per step (the same number a one-process run logs)."""
        t = torch.tensor([local_sums, counts], dtype=torch.float64)
        if self.ranks.world > 1:
            import torch.distributed as dist

            t = t.to(self.device)
            dist.all_reduce(t)
            t = t.cpu()
        return (t[0] / t[1].clamp(min=1)).tolist()

    def describe(self) -> dict:
        """The run's data-parallel facts, for vila2_train.json and the runs table."""
        d = {"world_size": self.ranks.world, "mode": self.mode, "global_batch": self.batch_size,
             "per_rank_batch": self.per_rank, "gradient_accumulation_steps": self.n_micro}
        if self.ds_config is not None:
            z = self.ds_config.get("zero_optimization", {})
            d["deepspeed"] = {"zero_stage": z.get("stage", 0),
                              "offload_optimizer": z.get("offload_optimizer", {}).get("device", "none"),
                              "offload_param": z.get("offload_param", {}).get("device", "none"),
                              "bf16": bool(self.ds_config.get("bf16", {}).get("enabled"))}
        return d

    def save(self, processor, out_dir: str | Path, meta: dict) -> str:
        """Rank 0 writes one HF checkpoint (under ZeRO-3 the partitioned weights are first gathered to it);
        returns its content hash on every rank."""
        state = None
        if self.engine is not None and self.engine.zero_optimization_stage() == 3:
            full = self.engine._zero3_consolidated_16bit_state_dict()   # collective: every rank takes part
            if self.ranks.main:
                state = {k.removeprefix("model."): v for k, v in full.items()}
        h = save_checkpoint(self.model, processor, out_dir, meta, state_dict=state) if self.ranks.main else None
        barrier(self.ranks)
        return broadcast(h, self.ranks)


def deepspeed_settings(config: str | Path | dict, *, batch_size: int, world: int, micro: int, n_micro: int,
                       grad_clip: float, bf16: bool, lr: float, weight_decay: float) -> dict:
    """The recipe's DeepSpeed mapping (or a JSON file) completed from the stage: batch sizes from the global
    batch (these always win: the batch is the recipe's), clipping, bf16, and the optimizer's lr / betas /
    weight decay when the config names an optimizer."""
    cfg = json.loads(Path(config).read_text()) if isinstance(config, (str, Path)) else json.loads(json.dumps(config))
    cfg["train_micro_batch_size_per_gpu"] = micro
    cfg["gradient_accumulation_steps"] = n_micro
    cfg["train_batch_size"] = micro * n_micro * world
    cfg.setdefault("gradient_clipping", grad_clip)
    cfg.setdefault("bf16", {"enabled": bf16})
    cfg.setdefault("steps_per_print", 10 ** 9)   # the stage logs its own loss and speed
    if "optimizer" in cfg:
        params = cfg["optimizer"].setdefault("params", {})
        params.setdefault("lr", lr)
        params.setdefault("betas", [0.9, 0.95])
        params.setdefault("weight_decay", weight_decay)
    else:
        cfg.setdefault("zero_allow_untested_optimizer", True)
    return cfg


def finetune_specialist(out_dir: str | Path,
                        stage2_ckpt: str | Path,
                        task_data: str | Path | list[Sample],
                        caption_data: str | Path | list[Sample] | None = None,
                        mix_ratio: float = 1.0,   # caption samples per task sample (keeps the specialist writing prose)
                        sft_data: str | Path | list[Sample] | None = None,   # the SFT set, all of it each epoch
                        seed: int = 0,
                        epochs: float = 4.0,
                        lr: float = 1e-3,
                        batch_size: int = 32,
                        warmup_ratio: float = 0.03,
                        max_steps: int | None = None,
                        freeze_vision: bool = False,   # keep the vision tower as the parent has it (a pretrained
                                                       # tower the generalist froze: docs/results.md "make demo")
                        device: str = "cpu",
                        bf16: bool | None = None,
                        deepspeed_config: str | dict | None = None,
                        nproc: int = 1,   # data-parallel processes on this machine (as train_vlm; torchrun: ignored)
                        progress: bool = True,
                        step_callback: Callable[[int, torch.nn.Module], None] | None = None) -> str:
    """Fine-tune all parameters of a stage-2 (pretrain) checkpoint on task data mixed with caption and SFT
    data (method §2: the specialist keeps writing prose and answering as the generalist's SFT stage taught it).
    Returns the checkpoint dir (out_dir)."""
    if nproc > 1 and env_world_size() == 1:
        if step_callback is not None:
            raise ModelError("step_callback cannot cross process boundaries", f"nproc={nproc} starts new processes",
                             "use nproc=1 with a step_callback")
        kwargs = {k: v for k, v in locals().items() if k != "nproc"}
        return launch(nproc, "vila2_model.train:finetune_specialist", kwargs, Path(out_dir) / ".ranks")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    task, caps = _samples(task_data), _samples(caption_data)
    if not task:
        raise ModelError("specialist fine-tuning got no task samples", "the task data set is empty",
                         "pass the specialist's task set (e.g. world/tasks/spatial)")
    n_caps = int(round(mix_ratio * len(task))) if caps else 0
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(caps), (n_caps,), generator=g).tolist() if n_caps > len(caps) \
        else torch.randperm(len(caps), generator=g)[:n_caps].tolist()
    sft = _samples(sft_data)
    mixed = task + [caps[i] for i in pick] + sft
    processor = AutoProcessor.from_pretrained(str(stage2_ckpt))
    model = AutoModelForImageTextToText.from_pretrained(str(stage2_ckpt))
    enc = encode_samples(processor, mixed)
    run_stage(model, processor, enc, out_dir, stage="specialist", epochs=epochs, lr=lr, batch_size=batch_size,
              seed=seed, warmup_ratio=warmup_ratio, max_steps=max_steps, freeze_vision=freeze_vision,
              device=device, bf16=bf16,
              deepspeed_config=deepspeed_config, progress=progress, step_callback=step_callback,
              meta={"parent": str(stage2_ckpt), "parent_hash": content_hash(stage2_ckpt),
                    "task": str(task_data) if isinstance(task_data, (str, Path)) else f"{len(task)} samples",
                    "n_task": len(task), "n_caption": n_caps, "n_sft": len(sft), "freeze_vision": freeze_vision,
                    "sft": str(sft_data) if isinstance(sft_data, (str, Path)) else f"{len(sft)} samples"})
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
