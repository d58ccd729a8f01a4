"""Training sets as files: read the three formats `curator build` writes (LLaVA JSON, Parquet, WebDataset),
turn conversations into chat messages, and encode them into (input_ids, labels) with only answers supervised."""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from vila2_model.errors import ModelError

IMAGE_PLACEHOLDER = "<image>"
IGNORE = -100


@dataclass
class Sample:
    image: Image.Image            # RGB
    conversations: list[dict]     # [{"from": "human"|"gpt", "value": str}, ...]
    id: str = ""


def _open(data: bytes | str | Path) -> Image.Image:
    im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    im.load()
    return im.convert("RGB")


def load_conversations(path: str | Path, limit: int | None = None) -> list[Sample]:
    """Read a training set; the format is detected from what is on disk:
    a .json file or a directory with data.json (LLaVA), *.parquet files, or shard-*.tar files (WebDataset)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"training data {path} not found", "the path does not exist",
                         "pass a `curator build` output directory or a LLaVA data.json")
    if path.is_dir():
        if (path / "data.json").is_file():
            return _load_llava(path / "data.json", limit)
        parquet = sorted(path.glob("*.parquet"))
        if parquet:
            return _load_parquet(parquet, limit)
        tars = sorted(path.glob("*.tar"))
        if tars:
            return _load_webdataset(tars, limit)
        raise ModelError(f"no training data in {path}", "found no data.json, *.parquet or *.tar",
                         "point at a `curator build` output (formats: llava, parquet, webdataset)")
    if path.suffix == ".json":
        return _load_llava(path, limit)
    if path.suffix == ".parquet":
        return _load_parquet([path], limit)
    if path.suffix == ".tar":
        return _load_webdataset([path], limit)
    raise ModelError(f"unsupported training data file {path.name}", "expected .json, .parquet or .tar",
                     "pass a LLaVA data.json, a parquet shard, a webdataset shard, or their directory")


def _load_llava(file: Path, limit: int | None) -> list[Sample]:
    rows = json.loads(file.read_text())
    out = []
    for r in rows[:limit]:
        out.append(Sample(_open(file.parent / r["image"]), r["conversations"], str(r.get("id", ""))))
    return out


def _load_parquet(files: list[Path], limit: int | None) -> list[Sample]:
    import pyarrow.parquet as pq

    out = []
    for f in files:
        for r in pq.read_table(f, columns=["id", "image", "conversations"]).to_pylist():
            out.append(Sample(_open(r["image"]), r["conversations"], r["id"]))
            if limit is not None and len(out) >= limit:
                return out
    return out


def _load_webdataset(files: list[Path], limit: int | None) -> list[Sample]:
    # Plain tarfile is enough to read shards sequentially; the webdataset package is for streaming at scale.
    out = []
    for f in files:
        groups: dict[str, dict[str, bytes]] = {}
        with tarfile.open(f) as tar:
            for m in tar.getmembers():
                if m.isfile():
                    key, _, ext = m.name.partition(".")
                    groups.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for key, g in groups.items():
            img = next((g[e] for e in ("png", "jpg", "jpeg", "webp") if e in g), None)
            if img is None or "json" not in g:
                raise ModelError(f"webdataset sample {key} in {f.name} is incomplete",
                                 f"it has {sorted(g)}; expected an image and a .json",
                                 "rebuild the shard with `curator build --format webdataset`")
            meta = json.loads(g["json"])
            out.append(Sample(_open(img), meta["conversations"], str(meta.get("id", key))))
            if limit is not None and len(out) >= limit:
                return out
    return out


def to_messages(conversations: list[dict]) -> list[dict]:
    """LLaVA turns -> chat messages with structured content; `<image>` becomes an image part in place."""
    roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
    msgs = []
    for turn in conversations:
        role = roles.get(turn["from"])
        if role is None:
            raise ModelError(f"unknown conversation role {turn['from']!r}", "LLaVA turns are 'human' or 'gpt'",
                             "fix the training set's conversations")
        pieces = turn["value"].split(IMAGE_PLACEHOLDER)
        content = []
        for i, piece in enumerate(pieces):
            if i > 0:
                content.append({"type": "image"})
            piece = piece.strip("\n") if len(pieces) > 1 else piece
            if piece:
                content.append({"type": "text", "text": piece})
        msgs.append({"role": role, "content": content})
    return msgs


def _expander(processor):
    """The string expansion InternVLProcessor applies to each context image token (done here on strings, so the
    answer spans can be located by character offsets in the same text that is tokenized)."""
    tok = processor.tokenizer
    ctx = getattr(tok, "context_image_token", None)
    if ctx is None or not hasattr(processor, "image_seq_length"):
        raise ModelError("training needs an InternVL-format processor",
                         f"{type(processor).__name__} has no context image token / image_seq_length",
                         "train from a vila2_model preset or a local InternVL (-hf) checkpoint")
    expanded = tok.start_image_token + ctx * processor.image_seq_length + tok.end_image_token
    return lambda s: s.replace(ctx, expanded)


def encode_conversation(processor, conversations: list[dict], max_len: int | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one sample: labels copy the ids of assistant turns (their text and the end-of-turn
    token, so the model learns to stop) and are IGNORE everywhere else (template, human turns, image tokens)."""
    msgs = to_messages(conversations)
    render = lambda m, gen=False: processor.apply_chat_template(m, tokenize=False, add_generation_prompt=gen)  # noqa: E731
    expand = _expander(processor)
    full = expand(render(msgs))
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        a, b = expand(render(msgs[:i], gen=True)), expand(render(msgs[:i + 1]))
        if not (full.startswith(a) and full.startswith(b)):
            raise ModelError("the chat template does not render conversations prefix-consistently",
                             "answer spans cannot be located for loss masking",
                             "use a chat template whose rendering of the first k turns is a prefix of the whole")
        spans.append((len(a), len(b)))
    enc = processor.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [t if any(a <= s < b for a, b in spans) else IGNORE for t, (s, _) in zip(ids, enc["offset_mapping"])]
    if max_len is not None and len(ids) > max_len:
        # Truncating must not cut into the image tokens (the model checks that they all fit).
        ids, labels = ids[:max_len], labels[:max_len]
    return ids, labels


@dataclass
class Encoded:
    input_ids: list[list[int]]
    labels: list[list[int]]
    pixel_values: torch.Tensor    # (N, 3, H, W) float32, as the checkpoint's image processor makes them


def encode_samples(processor, samples: list[Sample], max_len: int | None = None, chunk: int = 256) -> Encoded:
    """Tokenize every sample and preprocess every image once, up front (epochs then cost only the model)."""
    ids, labels = [], []
    for s in samples:
        n_img = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in s.conversations)
        if n_img != 1:
            raise ModelError(f"training sample {s.id or '?'} has {n_img} <image> placeholders",
                             "each training sample pairs exactly one image with its conversation",
                             "put one <image> in the first human turn")
        i, l = encode_conversation(processor, s.conversations, max_len)
        ids.append(i)
        labels.append(l)
    pix = [processor.image_processor([s.image for s in samples[k:k + chunk]], return_tensors="pt")["pixel_values"]
           for k in range(0, len(samples), chunk)]
    return Encoded(ids, labels, torch.cat(pix) if pix else torch.empty(0))


def collate(enc: Encoded, idx: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch (training has no generation, so right padding keeps positions 0..n-1 unshifted)."""
    n = max(len(enc.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), n), pad_id, dtype=torch.long)
    lab = torch.full((len(idx), n), IGNORE, dtype=torch.long)
    att = torch.zeros((len(idx), n), dtype=torch.long)
    for r, i in enumerate(idx):
        k = len(enc.input_ids[i])
        ids[r, :k] = torch.tensor(enc.input_ids[i])
        lab[r, :k] = torch.tensor(enc.labels[i])
        att[r, :k] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": att, "pixel_values": enc.pixel_values[idx]}


def texts_of(samples: list[Sample]) -> list[str]:
    """All conversation text (placeholders removed): what the tokenizer is trained on."""
    return [t["value"].replace(IMAGE_PLACEHOLDER, "") for s in samples for t in s.conversations]
