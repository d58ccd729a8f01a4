"""The self-augment loop (VILA² §1): round 0 trains on the original captions; round k recaptions the
pretraining images with round k−1's SFT model, filters, builds, retrains from scratch, evaluates, tags.

This module holds order and resume only (pipelines/steps.py); every step is one call into curator or
vila2_model, recorded as a run, so the lineage captions ← checkpoint ← build ← captions is in the store.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from curator.errors import InputError
from pipelines.steps import StepRunner, tag_state


@dataclass
class TrainArgs:
    """Training recipe shared by every round (same hyperparameters each round — only the captions change)."""
    preset: str = "tiny"             # vila2_model preset (ignored when init_from is set)
    init_from: str | None = None     # start every round from this checkpoint (e.g. the vision foundation)
    vision_from: str | None = None   # or from pretrained parts: a SigLIP / InternViT tower ...
    llm_from: str | None = None      # ... and a Qwen2 / Llama LLM, with a fresh projector each round
    nproc: int = 1                   # data-parallel training processes
    freeze_vision: bool = False      # keep the vision tower frozen in every stage (a pretrained tower)
    sft_in_pretrain: float = 0.0     # copies of the SFT set mixed into stage 2 (VILA's ShareGPT4V share)
    epochs_align: float = 0.25       # stage 1: projector only
    epochs_pretrain: float = 2.0     # stage 2: projector + LLM on the round's build
    epochs_sft: float = 6.0          # stage 3: all parameters on the SFT set
    batch_size: int = 32
    max_steps: int | None = None     # per stage; toy runs in tests
    device: str = "cpu"


@dataclass
class RecaptionArgs:
    """How the previous round's SFT model recaptions the pretraining pool."""
    prompts: str = "vila2"           # the three long prompts, one drawn per image (seeded)
    engine: str = "transformers"     # transformers | vllm | ray
    batch_size: int = 64
    max_new_tokens: int = 128       # the world's detailed descriptions run to ~107 BPE tokens
    limit: int | None = None         # recaption only the first N selected images (smoke runs)
    procs: int = 1                   # local recaption processes, one shard each (transformers engine; CPU: 1/core)


@dataclass
class LoopConfig:
    """`curator run self-augment` — each field is a CLI flag."""
    rounds: int = 3                  # self-augment rounds after round 0
    policy: str = "concat"           # build policy for rounds ≥ 1 (original | recaption | concat)
    format: str = "parquet"          # build format the trainer reads
    filters: tuple = ("repetition", "ngram", "length", "truncation", "charset", "template")
    min_gain: float | None = 0.005   # stop early when a round improves the metric by less than this
    metric: str = "caption_p_x_r"    # eval metric that decides saturation
    seed: int = 0
    eval_limit: int | None = None    # grade only the first N eval items (smoke runs)
    train: TrainArgs = field(default_factory=TrainArgs)
    recaption: RecaptionArgs = field(default_factory=RecaptionArgs)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["filters"] = list(self.filters)
        return d


POLICIES = ("original", "recaption", "concat")


def _check(cfg: LoopConfig, sft_data: str, eval_json: str) -> None:
    if cfg.policy not in POLICIES:
        raise InputError(f"unsupported policy {cfg.policy!r} for self-augment", f"choose one of {', '.join(POLICIES)}",
                         "e.g. --policy concat")
    if cfg.rounds < 0:
        raise InputError(f"--rounds {cfg.rounds} is negative", "rounds count the self-augment rounds after round 0",
                         "e.g. --rounds 3")
    for what, p in (("SFT set", sft_data), ("eval set", eval_json)):
        if not Path(p).exists():
            raise InputError(f"{what} {p} not found", "the loop trains stage 3 on the SFT set and grades on the eval set",
                             "generate them with `curator world --out DIR` or pass --sft/--eval")


def train_and_register(store, work: Path, name: str, build_id: str, sft_data: str, cfg: LoopConfig, round: int,
                       parent: str | None) -> dict:
    """Stages 1–3 from scratch on the build, each stage registered in `models` (curator.training)."""
    from curator.training import train

    t = cfg.train
    return train(store, work / "models" / name, build_id, sft_data, round=round, parent_model_id=parent or "",
                 preset=t.preset, init_from=t.init_from, freeze_vision=t.freeze_vision,
                 vision_from=t.vision_from, llm_from=t.llm_from, nproc=t.nproc if t.nproc > 1 else None,
                 train_vision_in_pretrain=not t.vision_from,   # VILA: a pretrained tower stays frozen in stage 2
                 sft_in_pretrain=t.sft_in_pretrain, seed=cfg.seed, epochs_align=t.epochs_align,
                 epochs_pretrain=t.epochs_pretrain, epochs_sft=t.epochs_sft, batch_size=t.batch_size, max_steps=t.max_steps, device=t.device,
                 progress=False)


def evaluate_and_record(store, model_id: str, eval_json: str, cfg: LoopConfig, out_json: Path) -> dict:
    """Generate on the held-out set, grade, store metrics on the model row (curator.training.evaluate)."""
    from curator.training import evaluate

    e = evaluate(store, model_id, eval_json, out_json=out_json, limit=cfg.eval_limit, device=cfg.train.device)
    return {"metrics": e["metrics"], "alt_text": e["alt_text"], "eval_json": e["json"]}


def round_zero(run: StepRunner, store, work: Path, sft_data: str, eval_json: str, cfg: LoopConfig,
               retag: bool = False) -> dict:
    """Round 0 (the baseline every later round is compared with): original captions only."""
    return one_round(run, store, work, 0, None, sft_data, eval_json, cfg, policy="original", retag=retag)


def one_round(run: StepRunner, store, work: Path, k: int, prev: dict | None, sft_data: str, eval_json: str,
              cfg: LoopConfig, policy: str | None = None, tag: str | None = None, recaption: bool = True,
              name: str | None = None, short_tag: bool = True, retag: bool = False) -> dict:
    """One round. Tags: `<pipeline id>/<tag>` always (tag defaults to round-k; "" = no tag), plus the short
    `tag` when `short_tag` and it is free (or `retag`) — see pipelines.steps.tag_state."""
    from curator.build import build
    from curator.filters import run_filters
    from curator.recaption import recaption_in_processes as recaption_fn

    policy = policy or cfg.policy
    r = cfg.recaption
    if k > 0 and recaption:
        run.step(f"round-{k}/recaption", lambda: recaption_fn(
            store, k, prev["paths"]["sft"], workers=r.procs, prompts=r.prompts, kind="self", engine=r.engine,
            limit=r.limit, batch_size=r.batch_size, max_new_tokens=r.max_new_tokens, seed=cfg.seed,
            device=cfg.train.device,
            progress=False), round=k)
        if cfg.filters:
            run.step(f"round-{k}/filter", lambda: run_filters(store, k, filters=list(cfg.filters), kind="self"),
                     round=k)

    name = name or (f"round-{k}" if policy == cfg.policy or k == 0 else f"round-{k}-{policy}")

    def do_build():
        b = build(store, k, policy=policy, format=cfg.format, seed=cfg.seed,
                  out=str(work / "builds" / f"{name}-{policy}"), overwrite=True)
        return {"build_id": b.build_id, "path": str(Path(b.out_dir).resolve()), "rows": b.rows,
                "counts": b.manifest.get("counts", {})}

    b = run.step(f"{name}/build", do_build, round=k)
    fell_back = b.get("counts", {}).get("fallback_to_original", 0)
    if k > 0 and policy != "original" and fell_back:
        msg = f"warning: round {k}: {fell_back} of {b['rows']} images have no accepted recaption and fell back to the original caption"
        if fell_back == b["rows"]:
            msg += f" — ALL of them: this round trains on round 0's data (see `curator filter --round {k} --report`)"
        run.log(msg)
    t = run.step(f"{name}/train", lambda: train_and_register(
        store, work, name, b["build_id"], sft_data, cfg, k, parent=prev["models"]["sft"] if prev else None), round=k)
    e = run.step(f"{name}/eval", lambda: evaluate_and_record(
        store, t["models"]["sft"], eval_json, cfg, work / "eval" / f"{name}.json"), round=k)
    if tag != "":
        tag = tag or f"round-{k}"
        run.step(f"{name}/tag", lambda: tag_state(store, run.pipeline_id, tag, short=short_tag, retag=retag,
                                                  log=run.log), round=k)
    return {"round": k, "build": b, "models": t["models"], "paths": t["paths"], "metrics": e["metrics"]}


def run_self_augment(store, work_dir: str | Path, sft_data: str, eval_json: str, cfg: LoopConfig | None = None,
                     log: Callable[[str], None] = print, retag: bool = False) -> dict:
    """Round 0 + `cfg.rounds` self-augment rounds, resumable; stops early at saturation (min_gain).
    Each round is tagged `<pipeline id>/round-k`, and `round-k` when free (retag=True moves it; recorded)."""
    cfg = cfg or LoopConfig()
    _check(cfg, sft_data, eval_json)
    work = Path(work_dir).resolve()
    run = StepRunner(store, "self-augment", {**cfg.as_dict(), "sft": str(sft_data), "eval": str(eval_json),
                                             "work": str(work)}, log=log)
    rounds = [round_zero(run, store, work, sft_data, eval_json, cfg, retag=retag)]
    stopped = None
    for k in range(1, cfg.rounds + 1):
        rounds.append(one_round(run, store, work, k, rounds[-1], sft_data, eval_json, cfg, retag=retag))
        gain = rounds[-1]["metrics"].get(cfg.metric, 0.0) - rounds[-2]["metrics"].get(cfg.metric, 0.0)
        log(f"round {k}: {cfg.metric} {rounds[-2]['metrics'].get(cfg.metric, 0):.3f} → "
            f"{rounds[-1]['metrics'].get(cfg.metric, 0):.3f} (gain {gain:+.3f})")
        if cfg.min_gain is not None and k < cfg.rounds and gain < cfg.min_gain:
            stopped = (f"saturated after round {k}: {cfg.metric} gained {gain:+.4f} < --min-gain {cfg.min_gain}; "
                       f"rounds {k + 1}..{cfg.rounds} skipped")
            log(stopped)
            break
    best = max(rounds, key=lambda r: r["metrics"].get(cfg.metric, 0.0))
    return {"pipeline_id": run.pipeline_id, "rounds": rounds, "stopped": stopped, "best_round": best["round"],
            "ran": run.ran, "skipped": run.skipped}
