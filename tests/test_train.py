"""Training: loss falls, stages train the right parameters, determinism, resume, specialist start, eval gain."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from model_toy import caption, toy_items, write_llava
from vila2_model.checkpoint import content_hash, save_checkpoint
from vila2_model.data import encode_samples, load_conversations
from vila2_model.evaluate import predict
from vila2_model.generate import Generator
from vila2_model.model import build_model
from vila2_model.tokenizer import build_processor
from vila2_model.train import finetune_specialist, run_stage, train_vlm


pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(preset="micro", epochs_align=0.1, epochs_pretrain=2, epochs_sft=8, lr_pretrain=3e-3, lr_sft=3e-3,
            batch_size=16, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    pre = write_llava(d / "pre", 300, seed=0)
    sft = load_conversations(write_llava(d / "sft", 200, seed=1, kind="sft")) + \
        load_conversations(write_llava(d / "qa", 60, seed=2, kind="qa"))
    return {"dir": d, "pre": pre, "sft": sft}


@pytest.fixture(scope="module")
def trained(data):
    return train_vlm(data["dir"] / "run", data["pre"], data["sft"], seed=0, **FAST)


def test_tiny_trains_ten_steps_and_loss_falls(tmp_path, data):
    samples = load_conversations(data["pre"])[:160]
    proc = build_processor([caption(*t) for _, _, t in toy_items(200, 0)], None, "tiny")
    model = build_model("tiny", proc, seed=0)
    s = run_stage(model, proc, encode_samples(proc, samples), tmp_path, stage="pretrain", epochs=1, lr=2e-3,
                  batch_size=16, max_steps=10, log_every=1, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "loss_log.jsonl").read_text().splitlines()]
    assert s["steps"] == 10 and len(losses) == 10
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


def _part(key: str) -> str:
    return key.split(".")[1] if key.startswith("model.") else key.split(".")[0]


def test_stages_train_the_right_parameters(trained, data):
    assert sorted(trained) == ["align", "pretrain", "sft"]
    proc_dir = trained["align"]
    init = build_model("micro", __import__("transformers").AutoProcessor.from_pretrained(proc_dir), seed=0).state_dict()
    align = AutoModelForImageTextToText.from_pretrained(proc_dir).state_dict()
    changed = {_part(k) for k in init if not torch.equal(init[k], align[k])}
    assert changed == {"multi_modal_projector"}, changed
    pre = AutoModelForImageTextToText.from_pretrained(trained["pretrain"]).state_dict()
    changed = {_part(k) for k in init if not torch.equal(align[k], pre[k])}
    assert changed == {"multi_modal_projector", "language_model", "vision_tower", "lm_head"}, changed
    meta = json.loads((Path(trained["sft"]) / "vila2_train.json").read_text())
    assert meta["stage"] == "sft" and meta["final_loss"] < meta["first_loss"]


def test_deterministic_by_seed_and_resumable(tmp_path, data, trained):
    short = {**FAST, "max_steps": 3}
    a = train_vlm(tmp_path / "a", data["pre"], data["sft"], seed=5, **short)
    b = train_vlm(tmp_path / "b", data["pre"], data["sft"], seed=5, **short)
    c = train_vlm(tmp_path / "c", data["pre"], data["sft"], seed=6, **short)
    assert content_hash(a["sft"]) == content_hash(b["sft"]) != content_hash(c["sft"])
    # Rerun with the same arguments: every stage is reused, nothing rewritten.
    weights = Path(trained["sft"]) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert train_vlm(Path(trained["sft"]).parent, data["pre"], data["sft"], seed=0, **FAST) == trained
    assert weights.stat().st_mtime_ns == before


def test_specialist_starts_from_stage2_weights(tmp_path, trained, data):
    stage2 = AutoModelForImageTextToText.from_pretrained(trained["pretrain"]).state_dict()
    seen = {}

    def at_step(step, model):
        if step == 0:
            seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    task = load_conversations(write_llava(tmp_path / "task", 20, seed=9, kind="qa"))
    sft = list(data["sft"])
    out = finetune_specialist(tmp_path / "spec", trained["pretrain"], task, data["sft"], mix_ratio=0.5,
                              sft_data=sft[:7], max_steps=2, batch_size=8, progress=False, step_callback=at_step)
    assert seen.keys() == stage2.keys() and all(torch.equal(seen[k], stage2[k]) for k in stage2)
    meta = json.loads((Path(out) / "vila2_train.json").read_text())
    # task + mix_ratio × task caption samples + the whole SFT set given
    assert (meta["n_task"], meta["n_caption"], meta["n_sft"], meta["steps"]) == (20, 10, 7, 2)
    assert meta["parent_hash"] == content_hash(trained["pretrain"]) != content_hash(out)


def _toy_eval(path: Path, n: int = 24) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "images").mkdir(exist_ok=True)
    items = []
    for k, im, (c, s, q) in toy_items(n, seed=77):
        im.save(path / f"images/{k}.png")
        items.append({"id": str(k), "image": f"images/{k}.png", "truth": [c, s, q],
                      "vqa": [{"question": "What color is the shape?", "answer": c, "skill": "color"}]})
    (path / "eval.json").write_text(json.dumps(items))
    return path / "eval.json"


def _score(pred: dict, eval_json: Path) -> float:
    """Toy grader: share of true (color, shape, quadrant) facts a caption states, plus VQA accuracy."""
    items = json.loads(eval_json.read_text())
    facts = vqa = 0
    for it in items:
        text = pred["captions"][it["id"]]
        c, s, q = it["truth"]
        facts += sum(bool(re.search(rf"\b{re.escape(w)}\b", text)) for w in (c, s, q))
        vqa += pred["vqa"][it["id"]][0].strip() == c
    return facts / (3 * len(items)) + vqa / len(items)


def test_trained_beats_untrained_on_eval(tmp_path, trained):
    eval_json = _toy_eval(tmp_path / "eval")
    untrained = tmp_path / "untrained"
    from transformers import AutoProcessor
    proc = AutoProcessor.from_pretrained(trained["sft"])
    save_checkpoint(build_model("micro", proc, seed=0), proc, untrained)
    p_trained = predict(trained["sft"], eval_json, grounding_prompt=None, max_new_tokens=16)
    p_untrained = predict(untrained, eval_json, grounding_prompt=None, max_new_tokens=16)
    assert set(p_trained["captions"]) == {str(k) for k in range(24)}
    assert _score(p_trained, eval_json) > _score(p_untrained, eval_json) + 0.15
    assert set(p_trained["finish"].values()) == {"eos"}  # the trained model learned to stop


def test_trained_model_prefers_true_captions(trained):
    gen = Generator(trained["sft"])
    ims, truths = zip(*[(im, t) for _, im, t in toy_items(6, seed=31)])
    prompt = ["Describe the image in details."] * 6
    good = gen.loglikelihood(list(ims), prompt, [caption(*t) for t in truths])
    bad = gen.loglikelihood(list(ims), prompt, ["square square at at the the ." for _ in truths])
    assert all(g > b for g, b in zip(good, bad)), (good, bad)


def test_curator_train_and_eval_register_models(tmp_path):
    """The curator side: train on a world, one models row per stage with lineage; `curator eval` grades,
    prints the table against the alt-text, and stores the metrics."""
    from click.testing import CliRunner

    from curator.cli import cli
    from curator.store import Store
    from curator.world.synthetic import WorldConfig, generate_world
    from curator.training import train

    w = generate_world(tmp_path / "w", n_pretrain=24, seed=0, cfg=WorldConfig(n_eval=4))
    # The round-0 training set as `curator build --policy original` writes it: "<image>" -> alt-text.
    rows = [json.loads(line) for line in w.pretrain_manifest.read_text().splitlines()]
    (w.root / "pretrain" / "data.json").write_text(json.dumps([
        {"id": str(k), "image": r["file"], "conversations": [{"from": "human", "value": "<image>"},
                                                            {"from": "gpt", "value": r["caption"]}]}
        for k, r in enumerate(rows)]))
    store = Store(str(tmp_path / "store"), create=True)
    res = train(store, tmp_path / "m", str(w.root / "pretrain"), str(w.sft), round=0, preset="micro",
                max_steps=2, batch_size=4, progress=False)
    got = store.sql("SELECT model_id, stage, parent_model_id, round, role FROM models ORDER BY created_at").to_pylist()
    assert [(r["stage"], r["round"], r["role"]) for r in got] == [("align", 0, "generalist"), ("pretrain", 0, "generalist"),
                                                                  ("sft", 0, "generalist")]
    assert [r["parent_model_id"] for r in got] == ["", got[0]["model_id"], got[1]["model_id"]]
    assert got[2]["model_id"] == res["models"]["sft"] == content_hash(res["paths"]["sft"])

    run = CliRunner().invoke(cli, ["--store", str(tmp_path / "store"), "eval", "--model", res["models"]["sft"][:12],
                                   "--eval", str(w.eval), "--limit", "3", "--no-grounding"])
    assert run.exit_code == 0, run.output
    assert "alt-text" in run.output and "model" in run.output and "(3 eval images)" in run.output
    metrics = json.loads(store.sql("SELECT metrics FROM models WHERE stage = 'sft'").to_pylist()[0]["metrics"])
    assert metrics["n_eval"] == 3 and 0.0 <= metrics["caption_p_x_r"] <= 1.0 and "vqa_acc" in metrics
    listing = CliRunner().invoke(cli, ["--store", str(tmp_path / "store"), "models"])
    assert listing.exit_code == 0 and listing.output.count("generalist") == 3

    bad = CliRunner().invoke(cli, ["--store", str(tmp_path / "store"), "train", "--data", "nope", "--sft", str(w.sft),
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1
    assert "Error: training data 'nope' not found — it is neither a build_id" in bad.output
