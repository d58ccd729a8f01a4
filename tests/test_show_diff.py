"""`curator show` and `curator diff` on a tiny real store (tests/inspect_store.py): exact output."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from curator.cli import cli
from curator.show import diff, show
from inspect_store import build_store

SAMPLING = '{"do_sample": false, "max_new_tokens": 64, "seed": 0}'


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("showdiff") / "store"
    st, ids = build_store(path)
    return str(path), st, ids


def run(store_path, *args):
    res = CliRunner().invoke(cli, ["--store", store_path, *args])
    return res.exit_code, res.output


def test_show_prints_every_version_with_provenance_and_verdicts(tiny):
    path, _, ids = tiny
    A, c = ids["A"], ids["captions"]
    code, out = run(path, "show", A[:8])            # a prefix is enough
    assert code == 0, out
    assert out == f"""image {A}
  source=synthetic  48x48 PNG  split=train  uri=a.png
5 caption versions

r0 original  caption {c['A0'][:12]}  accepted
  "red thing stock photo"
  captioner=source  prompt_id=-  sampling=-  sample=0  finish=source  tokens=-  run_id=ingest-r0

r1 self  caption {c['A1raw'][:12]}  REJECTED by repetition (repeated 3-gram)
  "a red square. a red square. a red square."
  captioner=c1c1c1c1c1c1  prompt_id=long-1  sampling={SAMPLING}  sample=0  finish=length  tokens=9  run_id=recaption-r1
  verdict repetition: keep=no score=3.000 reason=repeated 3-gram run_id=filter-20

r1 self  caption {c['A1'][:12]}  accepted
  "a red square."
  captioner=c1c1c1c1c1c1  prompt_id=long-1  sampling={SAMPLING}  sample=0  finish=derived  tokens=3  run_id=filter-20
  derived from {c['A1raw'][:12]} by repcut
  verdict repetition: keep=yes score=1.000 run_id=filter-21

r2 self  caption {c['A2'][:12]}  accepted
  "a large red square in the center of the image."
  captioner=c2c2c2c2c2c2  prompt_id=long-1  sampling={SAMPLING}  sample=0  finish=eos  tokens=10  run_id=recaption-r2

r2 spatial  caption {c['A2sp'][:12]}  accepted
  "the red square is at the center."
  captioner=5a5a5a5a5a5a  prompt_id=spatial-1  sampling={SAMPLING}  sample=0  finish=eos  tokens=7  run_id=recaption-r2
"""


def test_show_uses_each_filters_latest_verdict(tiny):
    _, st, ids = tiny
    ic = show(st, ids["C"])
    assert [(c.round, c.kind) for c in ic.captions] == [(0, "original"), (1, "self")]
    c1 = ic.captions[1]
    # length: rejected, then re-scored with a looser threshold and kept -> only repetition rejects it
    assert [(v.filter, v.keep) for v in c1.verdicts] == [("length", False), ("length", True), ("repetition", False)]
    assert [v.filter for v in c1.rejected_by] == ["repetition"]
    assert not c1.accepted and ic.captions[0].accepted


def test_show_errors_are_one_line(tiny):
    path, _, _ = tiny
    assert run(path, "show", "abcdef12") == (1, "Error: no image abcdef12 in the store — no image_id starts with it "
                                                "— copy one from `curator sql \"SELECT image_id FROM images LIMIT 5\"`\n")
    assert run(path, "show", "xyz") == (1, "Error: invalid image id 'xyz' — image ids are sha256 hex (a prefix of 6+ "
                                           "characters works) — copy one from `curator sql \"SELECT image_id FROM "
                                           "images LIMIT 5\"`\n")


def _by_id(ids, *names):
    return sorted(names, key=lambda n: ids[n])


def test_diff_round0_to_round1_exact(tiny):
    path, _, ids = tiny
    code, out = run(path, "diff", "--round", "0", "--round", "1")
    assert code == 0, out
    blocks = {
        "A": f"""{ids['A'][:12]}  words 4 -> 3 (-1)
  - "red thing stock photo"
  + "a red square."
  recall 0.00 -> 0.50  precision - -> 1.00  facts gained: object 2; lost: none
""",
        "B": f"""{ids['B'][:12]}  words 1 -> 7 (+6)
  - "blue"
  + "a blue square on a white background."
  recall 0.00 -> 0.22  precision - -> 1.00  facts gained: object 2; lost: none
""",
        "C": f"""{ids['C'][:12]}  words 1 -> 12 (+11)
  - "green"
  + "a green square with a green square next to a green square."
""",
    }
    # round 1 of A is its derived repcut version (latest), not the rejected raw one
    assert out == ("diff round 0 (original) -> round 1 (self): 3 images in both\n\n"
                   + "\n".join(blocks[n] for n in _by_id(ids, "A", "B", "C"))
                   + "\ndrift: mean words 2.0 -> 7.3 (+5.3) over 3 image(s)\n"
                   "synthetic (2 graded): recall 0.00 -> 0.36, precision - -> 1.00, facts gained 4, lost 0, "
                   "hallucinations gained 0, gone 0\n")


def test_diff_backwards_shows_lost_facts_and_gone_hallucinations(tiny):
    path, st, ids = tiny
    code, out = run(path, "diff", "--round", "2", "--round", "1", "--limit", "1")
    assert code == 0, out
    first = _by_id(ids, "A", "B")[0]
    block = {
        "A": f"""{ids['A'][:12]}  words 10 -> 3 (-7)
  - "a large red square in the center of the image."
  + "a red square."
  recall 1.00 -> 0.50  precision 1.00 -> 1.00  facts gained: none; lost: object 2
""",
        "B": f"""{ids['B'][:12]}  words 12 -> 7 (-5)
  - "a small blue square at the top left and a red circle."
  + "a blue square on a white background."
  recall 0.56 -> 0.22  precision 0.83 -> 1.00  facts gained: none; lost: object 3
  - hallucinated: red circle: color is green, not red
""",
    }[first]
    assert out == ("diff round 2 (self) -> round 1 (self): 2 images in both, 1 only in round 1\n\n" + block
                   + "\n... 1 more image(s) (raise --limit to list them)\n"
                   "\ndrift: mean words 11.0 -> 5.0 (-6.0) over 2 image(s)\n"
                   "synthetic (2 graded): recall 0.78 -> 0.36, precision 0.92 -> 1.00, facts gained 0, lost 5, "
                   "hallucinations gained 0, gone 1\n")
    s = diff(st, 1, 2).summary()
    assert (s["images"], s["only_a"], s["only_b"], s["graded"]) == (2, 1, 0, 2)
    assert (s["facts_gained"], s["facts_lost"], s["hallucinations_gained"], s["hallucinations_lost"]) == (5, 0, 1, 0)
    assert s["mean_delta_words"] == 6.0


def test_diff_other_kind_and_where(tiny):
    path, _, ids = tiny
    code, out = run(path, "diff", "--round", "0", "--round", "2", "--kind", "spatial", "--where", "source = 'synthetic'")
    assert code == 0, out
    assert out.splitlines()[0] == "diff round 0 (original) -> round 2 (spatial): 1 image in both, 1 only in round 0"
    assert out.splitlines()[2] == f"{ids['A'][:12]}  words 4 -> 7 (+3)"


def test_diff_errors_are_one_line(tiny):
    path, _, _ = tiny
    assert run(path, "diff", "--round", "1") == (
        1, "Error: diff got 1 --round value(s) — it compares exactly two rounds — e.g. curator diff --round 0 --round 1\n")
    code, out = run(path, "diff", "--round", "3", "--round", "4")
    assert (code, out) == (1, "Error: no captions for round 3 (self) or round 4 (self) — the store holds none of those "
                              "round×kind rows — list what exists: curator sql \"SELECT round, kind, count(*) FROM "
                              "captions GROUP BY ALL\"\n")


def test_at_reads_the_store_as_tagged(tmp_path):
    from inspect_store import CKPT2, _cap, _verdict

    st, ids = build_store(tmp_path / "store")
    st.tag("before")
    assert st.add_captions([_cap(ids["A"], 3, "self", "a large red square.", 50, CKPT2, "long-1")]) == 1
    assert st.add_verdicts([_verdict(ids["captions"]["A2"], "length", False, 10.0, "too long", 51, {"max": 8})]) == 1
    now, before = show(st, ids["A"]), show(st, ids["A"], at="before")
    assert [(c.round, c.kind) for c in now.captions][-1] == (3, "self") and len(now.captions) == 6
    assert len(before.captions) == 5
    assert [c.accepted for c in now.captions if c.round == 2] == [False, True]
    assert [c.accepted for c in before.captions if c.round == 2] == [True, True]
    code, out = run(str(tmp_path / "store"), "show", ids["A"], "--at", "before")
    assert code == 0 and out.splitlines()[2] == "5 caption versions"
    code, out = run(str(tmp_path / "store"), "diff", "--round", "2", "--round", "3", "--at", "before")
    assert (code, out.splitlines()[0]) == (0, "diff round 2 (self) -> round 3 (self): 0 images in both, 2 only in round 2")
    code, out = run(str(tmp_path / "store"), "diff", "--round", "2", "--round", "3")
    assert out.splitlines()[0] == "diff round 2 (self) -> round 3 (self): 1 image in both, 1 only in round 2"
