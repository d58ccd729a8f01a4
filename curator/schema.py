"""The store's tables as Arrow schemas, and the deterministic keys. Every layer uses these; no copies.

Long format: a new round adds rows, never columns. JSON-valued columns are strings holding JSON.
Rounds: round 0 = original captions; round k captions are written by the round k-1 SFT model and
train the round k model. Timestamps are UTC, microseconds.
"""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

IMAGES = pa.schema([
    ("image_id", pa.string()),      # sha256 hex of the image bytes as stored
    ("uri", pa.string()),           # where it came from (first seen); other names go to meta.aliases
    ("source", pa.string()),        # synthetic | folder | manifest | hf | webdataset
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("format", pa.string()),        # PNG, JPEG, ... (after normalisation)
    ("split", pa.string()),         # train (pretraining pool) | other user labels
    ("meta", pa.string()),          # JSON: ground truth for synthetic images, aliases, original mode
    ("bytes", pa.binary()),         # inline image bytes (null when external)
    ("ingested_at", TS),
    ("run_id", pa.string()),
])

CAPTIONS = pa.schema([
    ("caption_id", pa.string()),         # caption_key(...)
    ("image_id", pa.string()),
    ("round", pa.int32()),               # 0 = original
    ("kind", pa.string()),               # original | self | spatial | grounding | ocr | <user specialist>
    ("text", pa.string()),
    ("captioner", pa.string()),          # checkpoint content hash, or "source" for originals
    ("prompt_id", pa.string()),          # id in prompts.yaml ("" for originals)
    ("prompt", pa.string()),             # prompt text as sent ("" for originals)
    ("sampling", pa.string()),           # JSON: {"do_sample":..,"temperature":..,"top_p":..,"max_new_tokens":..,"seed":..}
    ("sample_idx", pa.int32()),          # index of the draw for (image, prompt) — 0 unless several samples
    ("finish_reason", pa.string()),      # eos | length | source | derived
    ("n_tokens", pa.int32()),            # generated tokens (null for originals)
    ("parent_caption_id", pa.string()),  # set for derived versions (e.g. repetition cut)
    ("transform", pa.string()),          # "" for raw; e.g. "repcut" for derived versions
    ("run_id", pa.string()),
    ("created_at", TS),
])

VERDICTS = pa.schema([
    ("verdict_id", pa.string()),     # sha256(caption_id|filter|config_hash)[:32]
    ("caption_id", pa.string()),
    ("filter", pa.string()),         # repetition | ngram | length | truncation | charset | template | grounding | clip ...
    ("score", pa.float64()),
    ("keep", pa.bool_()),
    ("reason", pa.string()),         # "" when kept
    ("config", pa.string()),         # JSON of the filter's thresholds
    ("config_hash", pa.string()),
    ("run_id", pa.string()),
    ("created_at", TS),
])

RUNS = pa.schema([
    ("run_id", pa.string()),
    ("kind", pa.string()),           # ingest | recaption | filter | build | train | eval | pipeline step
    ("round", pa.int32()),
    ("config", pa.string()),         # JSON
    ("started_at", TS),
    ("finished_at", TS),
    ("status", pa.string()),         # running | ok | failed
    ("counts", pa.string()),         # JSON: {"added": n, "skipped": n, "rejected": {reason: n}, ...}
    ("versions_read", pa.string()),  # JSON {table: lance version}
    ("versions_written", pa.string()),
    ("error", pa.string()),
])

MODELS = pa.schema([             # one row per registration: a checkpoint trained in two rounds has two rows
    ("registration_id", pa.string()),  # registration_key(model_id, round, role, stage, trained_on, parent_model_id)
    ("model_id", pa.string()),       # checkpoint content hash (== captioner id in captions)
    ("round", pa.int32()),
    ("role", pa.string()),           # generalist | spatial | grounding | ocr | ...
    ("stage", pa.string()),          # align | pretrain | sft | specialist
    ("path", pa.string()),
    ("preset", pa.string()),
    ("trained_on", pa.string()),     # build_id (or a file path for SFT/task sets)
    ("parent_model_id", pa.string()),
    ("metrics", pa.string()),        # JSON eval metrics ("{}" until evaluated)
    ("run_id", pa.string()),
    ("created_at", TS),
])

BUILDS = pa.schema([
    ("build_id", pa.string()),
    ("round", pa.int32()),
    ("policy", pa.string()),         # original | recaption | concat | specialist-qa | custom
    ("sql", pa.string()),
    ("sql_hash", pa.string()),
    ("store_versions", pa.string()), # JSON {table: version} read
    ("seed", pa.int64()),
    ("format", pa.string()),         # llava | parquet | webdataset
    ("output_path", pa.string()),
    ("rows", pa.int64()),
    ("content_hash", pa.string()),   # sha256 over the output files' bytes
    ("counts", pa.string()),         # JSON, e.g. {"fallback_to_original": n}
    ("run_id", pa.string()),
    ("created_at", TS),
])

FAILURES = pa.schema([               # per-item failures (load / generate) — retried on the next run
    ("run_id", pa.string()),
    ("image_id", pa.string()),
    ("round", pa.int32()),
    ("kind", pa.string()),
    ("stage", pa.string()),          # load | generate | score
    ("reason", pa.string()),
    ("created_at", TS),
])

TABLES = {
    "images": IMAGES, "captions": CAPTIONS, "verdicts": VERDICTS, "runs": RUNS,
    "models": MODELS, "builds": BUILDS, "failures": FAILURES,
}


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def image_key(image_bytes: bytes) -> str:
    """image_id: sha256 of the bytes as stored (same bytes under two names = one image)."""
    return sha256_hex(image_bytes)


def caption_key(image_id: str, round: int, kind: str, captioner: str, prompt_id: str,
                sample_idx: int = 0, transform: str = "", parent_caption_id: str = "") -> str:
    """Deterministic caption_id: reruns of the same work produce the same key (idempotent writes)."""
    return sha256_hex(
        f"{image_id}|{round}|{kind}|{captioner}|{prompt_id}|{sample_idx}|{transform}|{parent_caption_id}"
    )[:32]


def registration_key(model_id: str, round: int | None, role: str, stage: str, trained_on: str,
                     parent_model_id: str) -> str:
    """Key of a models row: one checkpoint (model_id) may be registered for several rounds / roles / builds,
    and each registration is a lineage fact of its own; registering the same fact again is a no-op."""
    return sha256_hex(f"{model_id}|{round}|{role}|{stage}|{trained_on}|{parent_model_id}")[:32]


def config_hash(config: dict) -> str:
    return sha256_hex(json.dumps(config, sort_keys=True, separators=(",", ":")))[:16]


def verdict_key(caption_id: str, filter_name: str, cfg_hash: str) -> str:
    return sha256_hex(f"{caption_id}|{filter_name}|{cfg_hash}")[:32]
