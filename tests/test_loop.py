"""The whole VILA² loop at toy size: real world, real store, real micro model that trains a few steps,
real recaption / filter / build / eval; then resume after an injected failure in a real subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curator.errors import InputError
from curator.ingest import ingest
from curator.store import Store
from curator.world.synthetic import WorldConfig, generate_world
from pipelines.self_augment import LoopConfig, RecaptionArgs, TrainArgs, run_self_augment
from pipelines.specialist_augment import SpecialistArgs, SpecialistConfig, run_specialist_augment

N = 96


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    generate_world(d, n_pretrain=N, seed=3, cfg=WorldConfig(n_eval=12))
    return d


def toy_loop(rounds=2) -> LoopConfig:
    # 3 optimizer steps make a model that writes empty captions; the length/template filters would reject
    # them all and every round would train on round 0's data again — keep a filter that passes them.
    return LoopConfig(rounds=rounds, min_gain=None, eval_limit=8, seed=0, filters=("charset",),
                      train=TrainArgs(preset="micro", max_steps=3, batch_size=16),
                      recaption=RecaptionArgs(max_new_tokens=24, batch_size=48))


def _store_with_world(tmp_path, world):
    store = Store(str(tmp_path / "store"), create=True)
    ingest(store, manifest=str(world / "pretrain" / "manifest.jsonl"))
    return store


COUNTING_POOL = ["How many shapes are in the image?", "Count the objects in the image."]


def _counting_specialist(world, out) -> tuple[str, str]:
    """A user specialist: a counting task set (LLaVA JSON over the world's images) and a prompts YAML that
    holds only its prompt set and question pool."""
    out.mkdir()
    items = []
    for i, line in enumerate((world / "pretrain" / "manifest.jsonl").read_text().splitlines()[:24]):
        r = json.loads(line)
        n = len(r["meta"]["objects"])
        items.append({"id": f"count-{i}", "image": str(world / "pretrain" / r["file"]), "conversations": [
            {"from": "human", "value": "<image>\nHow many shapes are there? Count them."},
            {"from": "gpt", "value": f"There {'is' if n == 1 else 'are'} {n} shape{'s' if n != 1 else ''}."}]})
    (out / "data.json").write_text(json.dumps(items))
    (out / "prompts.yaml").write_text(
        "prompts:\n  count-v1: 'How many shapes are there? Count them.'\nsets:\n  counting: [count-v1]\n"
        "question_pools:\n  counting:\n" + "".join(f"    - '{q}'\n" for q in COUNTING_POOL))
    return str(out / "data.json"), str(out / "prompts.yaml")


def _parquet_rows(path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(sorted(Path(path).glob("data-*.parquet"))).to_pylist()


def test_full_loop_artifacts_and_lineage(tmp_path, world):
    store = _store_with_world(tmp_path, world)
    sft, ev = str(world / "sft" / "data.json"), str(world / "eval" / "eval.json")
    logs = []
    res = run_self_augment(store, tmp_path / "work", sft, ev, toy_loop(), log=logs.append)
    assert [r["round"] for r in res["rounds"]] == [0, 1, 2]
    assert res["stopped"] is None
    tasks = {n: str(world / "tasks" / n / "data.json") for n in ("spatial", "grounding", "ocr")}
    # a specialist that is not built in: its task set, and its prompt set + question pool in a user YAML
    tasks["counting"], prompts_file = _counting_specialist(world, tmp_path / "counting")
    scfg = SpecialistConfig(specialists=tasks, loop=toy_loop(), finetune=SpecialistArgs(epochs=1.0),
                            prompts_file=prompts_file)
    sres = run_specialist_augment(store, tmp_path / "work", sft, ev, scfg, log=logs.append)
    assert sres["round"] == 3 and sres["base_round"] == 2
    # each specialist is graded on its own skill beside the base round's generalist
    # (a user specialist has no built-in skill metric: graded, but reported without one)
    assert {n: v["metric"] for n, v in sres["specialist_skills"].items()} == {
        "spatial": "vqa_acc_spatial", "grounding": "grounding_iou", "ocr": "vqa_acc_ocr", "counting": None}
    assert all(isinstance(v["specialist"], float) for v in sres["specialist_skills"].values() if v["metric"])
    # rerunning finds the same base (round 2, not its own round 3) and resumes: nothing runs again
    again = run_specialist_augment(store, tmp_path / "work", sft, ev, scfg, log=logs.append)
    assert again["round"] == 3 and again["ran"] == [] and len(again["skipped"]) == len(sres["ran"])

    # the custom specialist's captions reach the concat-specialist-qa build (one QA turn per image, its question from
    # the user's pool) and the generalist trained on that build
    counting = {r["image_id"]: r["text"] for r in store.sql(
        "SELECT image_id, text FROM captions WHERE kind = 'counting' AND round = 3 AND transform = ''").to_pylist()}
    assert len(counting) == N
    rows = _parquet_rows(sres["build"]["path"])
    turns = {r["image_id"]: [(rows_q["value"], rows_a["value"]) for rows_q, rows_a in
                             zip(r["conversations"][2::2], r["conversations"][3::2])] for r in rows}
    assert len(turns) == N
    for image_id, text in counting.items():
        asked = [q for q, a in turns[image_id] if q in COUNTING_POOL]
        assert len(asked) == 1 and (asked[0], text) in turns[image_id]
    trained = store.sql("SELECT trained_on FROM models WHERE role = 'generalist' AND round = 3 AND stage = 'pretrain'"
                        ).column("trained_on").to_pylist()
    assert trained == [sres["build"]["build_id"]]

    # tags for every round, in the pipelines' namespaces and (free here) the short round-N
    assert {"round-0", "round-1", "round-2", "round-3"} <= set(store.tags())
    assert {f"{res['pipeline_id']}/round-{k}" for k in (0, 1, 2)} <= set(store.tags())
    assert sum(t.startswith("specialist-augment-") and t.endswith("/round-3") for t in store.tags()) == 1
    # every step recorded once, ok
    steps = store.sql("SELECT json_extract_string(config, '$.step') AS step, status FROM runs WHERE kind = 'step'"
                      ).to_pylist()
    names = [s["step"] for s in steps]
    assert len(names) == len(set(names)), names
    assert all(s["status"] == "ok" for s in steps)
    assert "round-2/recaption" in names and "specialist/ocr/finetune" in names and "round-3/eval" in names
    assert "specialist/grounding/eval" in names

    # one recaption per pretraining image per round (N images), exactly
    per_round = {r["round"]: r["n"] for r in store.sql(
        "SELECT round, count(*) AS n FROM captions WHERE kind = 'self' AND transform = '' GROUP BY round").to_pylist()}
    assert per_round == {1: N, 2: N}
    spec = {r["kind"]: r["n"] for r in store.sql(
        "SELECT kind, count(*) AS n FROM captions WHERE round = 3 AND transform = '' GROUP BY kind").to_pylist()}
    assert spec == {"spatial": N, "grounding": N, "ocr": N, "counting": N}

    # lineage: round-k captions were written by round k-1's SFT model; round-k model trained on round-k build
    # (toy models can come out byte-identical across rounds — same id — so check against the loop's outputs)
    for k in (1, 2):
        captioners = {r["captioner"] for r in store.sql(
            f"SELECT DISTINCT captioner FROM captions WHERE kind = 'self' AND round = {k}").to_pylist()}
        assert captioners == {res["rounds"][k - 1]["models"]["sft"]}
    known = {r["model_id"] for r in store.sql("SELECT model_id FROM models WHERE stage = 'sft'").to_pylist()}
    assert {r["models"]["sft"] for r in res["rounds"]} <= known
    trained = store.sql("""
        SELECT m.round, b.round AS build_round, b.policy FROM models m JOIN builds b ON b.build_id = m.trained_on
        WHERE m.role = 'generalist' AND m.stage = 'pretrain' ORDER BY m.round""").to_pylist()
    assert all(t["round"] == t["build_round"] for t in trained), trained
    assert [t["policy"] for t in trained][0] == "original" and trained[-1]["policy"] == "concat-specialist-qa"
    assert {t["policy"] for t in trained} == {"original", "concat", "concat-specialist-qa"}
    # each specialist fine-tuned on its task data + as many caption samples + the whole SFT set
    n_sft = len(json.loads(Path(sft).read_text()))
    for name in ("spatial", "ocr"):
        meta = json.loads((tmp_path / "work" / "models" / f"specialist-{name}" / "vila2_train.json").read_text())
        assert (meta["n_caption"], meta["n_sft"]) == (meta["n_task"], n_sft), meta
    specialists = store.sql("SELECT role, parent_model_id FROM models WHERE stage = 'specialist' ORDER BY role"
                            ).to_pylist()
    stage2_r2 = store.sql("SELECT model_id FROM models WHERE round = 2 AND stage = 'pretrain' AND role = 'generalist'"
                          ).to_pylist()[0]["model_id"]
    assert [s["role"] for s in specialists] == ["counting", "grounding", "ocr", "spatial"]
    assert {s["parent_model_id"] for s in specialists} == {stage2_r2}
    # every generalist SFT model has eval metrics
    metrics = store.sql("SELECT round, metrics FROM models WHERE role = 'generalist' AND stage = 'sft' ORDER BY round"
                        ).to_pylist()
    assert [m["round"] for m in metrics][0] == 0 and metrics[-1]["round"] == 3
    for m in metrics:
        assert "caption_p_x_r" in json.loads(m["metrics"])

    # the report
    from curator.report import report

    path, table = report(store, tmp_path / "report.html", gallery_size=3)
    html = Path(path).read_text()
    assert "Gallery" in html and html.count("data:image/png;base64,") >= 3 + 2
    assert table.splitlines()[0].startswith("round")
    assert len(table.splitlines()) == 2 + len(metrics)

    # rerunning the same loop does nothing new
    before = store.versions()
    res2 = run_self_augment(store, tmp_path / "work", sft, ev, toy_loop(), log=logs.append)
    assert res2["ran"] == [] and len(res2["skipped"]) == len(res["ran"])
    assert store.versions()["captions"] == before["captions"]


def test_resume_after_a_crash_subprocess(tmp_path, world):
    store_dir = tmp_path / "store"
    store = _store_with_world(tmp_path, world)
    del store
    cmd = [sys.executable, str(Path(__file__).with_name("crash_after_step.py")), "--store", str(store_dir),
           "run", "self-augment",
           "--world", str(world), "--work", str(tmp_path / "work"), "--rounds", "1", "--preset", "micro",
           "--max-steps", "2", "--max-new-tokens", "16", "--eval-limit", "4", "--min-gain", "-1",
           "--filters", "charset"]
    env = dict(os.environ, CRASH_AFTER_STEP="round-1/recaption")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert p.returncode == 137, p.stdout + p.stderr
    assert p.stderr.strip().splitlines()[-1] == "crashing after step round-1/recaption"
    env.pop("CRASH_AFTER_STEP")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[skip] round-0/train (done in an earlier run)" in p.stdout
    assert "[skip] round-1/recaption (done in an earlier run)" in p.stdout
    assert "[step] round-1/filter" in p.stdout
    store = Store(str(store_dir))
    ok = store.sql("SELECT json_extract_string(config, '$.step') AS step, count(*) AS n FROM runs "
                   "WHERE kind = 'step' AND status = 'ok' GROUP BY step").to_pylist()
    assert all(r["n"] == 1 for r in ok), ok
    assert {r["step"] for r in ok} >= {"round-0/train", "round-1/recaption", "round-1/filter", "round-1/tag"}
    dup = store.sql("SELECT count(*) AS n, count(DISTINCT caption_id) AS d FROM captions").to_pylist()[0]
    assert dup["n"] == dup["d"]
    assert store.sql("SELECT count(*) AS n FROM captions WHERE round = 1 AND transform = ''").to_pylist()[0]["n"] == N


def test_ablations_cli_refuses_a_directory_without_a_demo(tmp_path):
    r = subprocess.run([sys.executable, "-m", "curator.cli", "run", "ablations", "--out", str(tmp_path / "none")],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 1
    assert r.stderr.strip() == (f"Error: {tmp_path / 'none'} is not a finished demo directory — it has no store or "
                                "foundation — run `curator demo --out DIR` (or `make demo`) first")


def test_report_puts_the_compute_control_beside_the_rounds():
    from curator.report import ReportData, compute_control_lines, terminal_table

    def m(rnd, name, pxr):
        return {"model_id": f"{name}-id", "round": rnd, "role": "generalist", "stage": "sft",
                "path": f"/w/models/{name}/sft", "trained_on": "b", "metrics": json.dumps({"caption_p_x_r": pxr})}

    models = [m(0, "round-0", 0.30), m(0, "round-0-2x-epochs", 0.31), m(1, "round-1", 0.36), m(2, "round-2", 0.40)]
    line = ("compute control: round 0 with 2× the pretraining epochs, caption_p_x_r 0.310 — "
            "vs round 1 0.360 (+0.050), round 2 0.400 (+0.090)")
    assert compute_control_lines(models) == [line]
    table = terminal_table(ReportData(models=models, specialists=[], lengths={}, drops=[]))
    assert table.splitlines()[0].split()[:3] == ["round", "run", "model"]
    assert "round-0-2x-epochs" in table.splitlines()[3] and table.splitlines()[-1] == line


def test_compute_control_is_a_recorded_round_0_with_more_epochs_and_shows_in_the_report(tmp_path, world):
    from curator.report import report
    from pipelines.compute_control import run_compute_control

    store = _store_with_world(tmp_path, world)
    sft, ev = str(world / "sft" / "data.json"), str(world / "eval" / "eval.json")
    cfg = toy_loop(rounds=0)
    cfg.train.max_steps = None
    cfg.train.epochs_align, cfg.train.epochs_pretrain, cfg.train.epochs_sft = 0.05, 0.1, 0.1
    run_self_augment(store, tmp_path / "work", sft, ev, cfg, log=lambda m: None)
    ctl = run_compute_control(store, tmp_path / "work", sft, ev, cfg, epochs_factor=2.0, log=lambda m: None)
    assert Path(ctl["paths"]["sft"]).parent.name == "round-0-2x-epochs"
    args = json.loads(store.sql("SELECT config FROM runs WHERE kind = 'train' ORDER BY started_at").to_pylist()[-1]
                      ["config"])["args"]
    assert args["epochs_pretrain"] == 0.2
    assert "round-0-2x-epochs" not in store.tags()       # a control is not a round
    _, table = report(store, tmp_path / "r.html", gallery_size=0)
    assert table.splitlines()[-1].startswith("compute control: round 0 with 2× the pretraining epochs, caption_p_x_r ")


def test_one_process_per_core_loop_trains_on_two_ranks_and_recaptions_in_two_shards(tmp_path, world):
    """The demo's set-up (TrainArgs.nproc=2, RecaptionArgs.procs=2) through the real pipeline: every training
    run (round 0, round 1, a specialist) is data-parallel on 2 processes, round 1's recaption is two shard
    runs that together caption every pool image once, and the specialist's recaption is split the same way."""
    store = _store_with_world(tmp_path, world)
    sft, ev = str(world / "sft" / "data.json"), str(world / "eval" / "eval.json")
    cfg = toy_loop(rounds=1)
    cfg.train.nproc, cfg.recaption.procs = 2, 2
    res = run_self_augment(store, tmp_path / "work", sft, ev, cfg, log=lambda m: None)
    assert [r["round"] for r in res["rounds"]] == [0, 1]
    spec = run_specialist_augment(store, tmp_path / "work", sft, ev, SpecialistConfig(
        specialists={"spatial": str(world / "tasks" / "spatial" / "data.json")}, loop=cfg,
        finetune=SpecialistArgs(max_steps=2)), log=lambda m: None)
    assert set(spec["specialists"]) == {"spatial"}
    runs = store.sql("SELECT kind, round, config, counts FROM runs WHERE kind IN ('train', 'recaption') "
                     "AND status = 'ok' ORDER BY started_at").to_pylist()
    train = [json.loads(r["config"]) for r in runs if r["kind"] == "train"]
    assert len(train) == 4   # round 0, round 1, the specialist, the specialist round
    for c, r in zip(train, [r for r in runs if r["kind"] == "train"]):
        if "specialist" in c:
            assert c["args"]["nproc"] == 2
            assert json.loads((Path(spec["specialists"]["spatial"]["path"]) / "vila2_train.json").read_text()
                              )["ranks"]["world_size"] == 2
        else:
            assert c["data_parallel"]["processes"] == 2
            assert json.loads(r["counts"])["stages"]["sft"]["ranks"]["world_size"] == 2
    rec = [json.loads(r["config"]) for r in runs if r["kind"] == "recaption"]
    assert sorted((c["kind"], tuple(c["shard"])) for c in rec) == [
        ("self", (0, 2)), ("self", (1, 2)), ("spatial", (0, 2)), ("spatial", (1, 2))]
    for kind in ("self", "spatial"):
        n = store.sql(f"SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM captions WHERE kind = '{kind}' "
                      "AND transform = ''").to_pylist()[0]
        assert n["n"] == n["d"] == N, (kind, n)


def test_specialists_can_start_from_the_base_rounds_generalist(tmp_path, world):
    """SpecialistArgs.start="sft": the specialist's recorded parent is round 0's SFT model, not its stage-2
    checkpoint; a bad value is refused before any work."""
    store = _store_with_world(tmp_path, world)
    sft, ev = str(world / "sft" / "data.json"), str(world / "eval" / "eval.json")
    cfg = toy_loop(rounds=0)
    res = run_self_augment(store, tmp_path / "work", sft, ev, cfg, log=lambda m: None)
    models = res["rounds"][0]["models"]
    tasks = {"ocr": str(world / "tasks" / "ocr" / "data.json")}
    with pytest.raises(InputError) as e:
        run_specialist_augment(store, tmp_path / "work", sft, ev, SpecialistConfig(
            specialists=tasks, loop=cfg, finetune=SpecialistArgs(max_steps=2, start="align")), log=lambda m: None)
    assert str(e.value) == ("unsupported specialist start 'align' — specialists start from the base round's "
                            "pretrain or sft checkpoint — e.g. --ft-start pretrain")
    spec = run_specialist_augment(store, tmp_path / "work", sft, ev, SpecialistConfig(
        specialists=tasks, loop=cfg, finetune=SpecialistArgs(max_steps=2, start="sft")), log=lambda m: None)
    mid = spec["specialists"]["ocr"]["model_id"]
    parent = store.sql(f"SELECT parent_model_id FROM models WHERE model_id = '{mid}'").to_pylist()[0]
    assert parent["parent_model_id"] == models["sft"] != models["pretrain"]
    recipes = [json.loads(r["config"])["recipe"] for r in store.sql(
        "SELECT config FROM runs WHERE kind = 'step' ORDER BY started_at").to_pylist()]
    spec_recipes = [c for c in recipes if "finetune" in c]
    assert spec_recipes and {c["finetune"]["start"] for c in spec_recipes} == {"sft"}


def test_specialists_keep_a_frozen_tower_and_one_below_the_minimum_gain_writes_no_data(tmp_path, world):
    """A generalist trained with a frozen tower hands it to its specialists unchanged (the fine-tune's learning
    rate would otherwise retrain a pretrained tower); with min_skill_gain no specialist whose own skill gains
    less recaptions, and with none left the specialist round is not trained."""
    from dataclasses import replace

    from safetensors.torch import load_file

    store = _store_with_world(tmp_path, world)
    sft, ev = str(world / "sft" / "data.json"), str(world / "eval" / "eval.json")
    cfg = toy_loop(rounds=0)
    cfg = replace(cfg, train=replace(cfg.train, freeze_vision=True))
    res = run_self_augment(store, tmp_path / "work", sft, ev, cfg, log=lambda m: None)
    logs = []
    tasks = {n: str(world / "tasks" / n / "data.json") for n in ("grounding", "ocr")}
    spec = run_specialist_augment(store, tmp_path / "work", sft, ev, SpecialistConfig(
        specialists=tasks, loop=cfg, finetune=SpecialistArgs(max_steps=2, min_skill_gain=2.0)), log=logs.append)
    parent = load_file(str(Path(res["rounds"][0]["paths"]["pretrain"]) / "model.safetensors"))
    for name in tasks:
        child = load_file(str(Path(spec["specialists"][name]["path"]) / "model.safetensors"))
        tower = [k for k in parent if "vision_tower" in k]
        assert tower and all(bool((child[k] == parent[k]).all()) for k in tower)
        assert any(not bool((child[k] == parent[k]).all()) for k in parent if "language_model" in k)
    assert spec["metrics"] is None and spec["models"] is None and spec["build"] is None
    assert set(spec["unused"]) == {"grounding", "ocr"}
    g = spec["specialist_skills"]["ocr"]
    assert spec["unused"]["ocr"] == (f"vqa_acc_ocr {g['specialist'] - g['base']:+.3f} over round 0's generalist, "
                                     "below the minimum gain +2.000")
    assert not g["used"]
    assert f"[specialist] ocr does not recaption: {spec['unused']['ocr']}" in logs
    assert "[specialist] no specialist lifted its own skill by +2.000: round 1 is not trained" in logs
    # neither wrote a caption, and round 1 was neither built nor trained
    assert store.sql("SELECT count(*) AS n FROM captions WHERE kind IN ('grounding', 'ocr')").to_pylist()[0]["n"] == 0
    steps = [json.loads(r["config"])["step"] for r in store.sql(
        "SELECT config FROM runs WHERE kind = 'step' AND status = 'ok'").to_pylist()]
    assert "specialist/ocr/eval" in steps
    assert not [s for s in steps if s.startswith("round-1/") or s.endswith(("/recaption", "/filter"))
                and s.startswith("specialist/")]
