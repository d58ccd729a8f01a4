"""Checkpoints are plain HF directories (model + processor + chat template), identified by a content hash.

The hash is the model's identity everywhere (the `captioner` of every caption it writes, the store's model_id),
so it covers what determines outputs — weights, configs, tokenizer, processor, chat template — and nothing
else: logs and training metadata beside the weights do not change it, and JSON files are hashed in canonical
form without the fields that vary by library version or load path, so a re-save of the same model keeps it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vila2_model.errors import ModelError

HASHED_SUFFIXES = (".safetensors", ".bin", ".jinja", ".model", ".txt")
HASHED_JSON = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "processor_config.json", "preprocessor_config.json",
               "video_preprocessor_config.json", "chat_template.json", "model.safetensors.index.json",
               "added_tokens.json")
# Keys that differ between a first save and a save after from_pretrained without changing the model: library
# version, load path/flags, the dtype echo, and the tokenizer's restatement of its extra special tokens.
_VOLATILE_KEYS = {"transformers_version", "_name_or_path", "name_or_path", "_commit_hash", "dtype", "torch_dtype",
                  "is_local", "local_files_only", "model_specific_special_tokens"}


def _canonical_json(data: bytes) -> bytes:
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in _VOLATILE_KEYS}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    return json.dumps(strip(json.loads(data)), sort_keys=True, separators=(",", ":")).encode()


def content_hash(ckpt_dir: str | Path) -> str:
    """sha256 (hex) over the checkpoint's weight, config, tokenizer and processor files, by name and content."""
    d = Path(ckpt_dir)
    if not (d / "config.json").is_file():
        raise ModelError(f"{d} is not a model checkpoint", "it has no config.json",
                         "pass a directory written by `curator train` or save_pretrained")
    h = hashlib.sha256()
    files = sorted(p for p in d.iterdir() if p.is_file()
                   and (p.name in HASHED_JSON or (p.suffix in HASHED_SUFFIXES and p.name != "loss_log.jsonl")))
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".json":
            data = _canonical_json(data)
        h.update(p.name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def save_checkpoint(model, processor, out_dir: str | Path, meta: dict | None = None, state_dict: dict | None = None) -> str:
    """Save model + processor (tokenizer, image processor, chat template) in HF format; returns the content hash.
    `meta` (stage, args, data, timings) goes to vila2_train.json, which the hash ignores. `state_dict`: the
    weights to write instead of the module's own (a ZeRO-3 run's gathered weights: its module holds only
    this rank's partition)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), **({"state_dict": state_dict} if state_dict is not None else {}))
    processor.save_pretrained(str(out))
    h = content_hash(out)
    (out / "vila2_train.json").write_text(json.dumps({**(meta or {}), "content_hash": h}, indent=1, default=str))
    return h
