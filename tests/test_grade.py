"""The grader on hand-written captions against a hand-written truth: exact fact counts."""
import copy

import pytest

from curator.errors import InputError
from curator.world.grade import (grade_alt_text, grade_caption, grade_eval, grade_grounding, grade_vqa, grounding_details,
                           normalize_answer, parse_caption)

# A large red circle at the top left, a small blue square at the center, the word "cat" at the bottom
# center. Truth facts: 2 objects × 4 + 1 pair + word text + word position = 11.
TRUTH = {
    "width": 64, "height": 64,
    "objects": [
        {"shape": "circle", "color": "red", "size": "large", "position": "top left", "box_1000": [0, 0, 500, 500]},
        {"shape": "square", "color": "blue", "size": "small", "position": "center",
         "box_1000": [450, 450, 650, 650]},
    ],
    "word": "cat", "word_position": "bottom center",
}
TRUE_CAPTION = ('a large red circle at the top left. a small blue square at the center. '
                'the word "cat" is written at the bottom center. the circle is left of the square.')


def truth():
    return copy.deepcopy(TRUTH)


def test_fully_true_caption_is_perfect():
    r = grade_caption(TRUE_CAPTION, truth())
    assert (r["precision"], r["recall"], r["f1"]) == (1.0, 1.0, 1.0)
    assert (r["n_stated"], r["n_true_stated"], r["n_truth"], r["n_recalled"]) == (11, 11, 11, 11)
    assert r["hallucinated"] == []
    assert r["length_words"] == 31


def test_partly_false_caption_exact_numbers():
    text = ('a large green circle at the top left. a small blue square at the bottom right. '
            'the word "dog". the circle is right of the square.')
    r = grade_caption(text, truth())
    # circle: exists, large, top left true; green false. square: exists, small, blue true; bottom right false.
    # word "dog" false; relation false (the circle is in column 0, the square in column 1).
    assert (r["n_stated"], r["n_true_stated"]) == (10, 6)
    assert r["precision"] == pytest.approx(0.6)
    assert r["n_recalled"] == 6 and r["recall"] == pytest.approx(6 / 11)
    assert r["hallucinated"] == [
        "large green circle at the top left: color is red, not green",
        "small blue square at the bottom right: position is center, not bottom right",
        "false relation: small blue square at the bottom right left of large green circle at the top left",
        'word "dog" is not written (the word is "cat")',
    ]
    assert r["by_kind"]["relation"] == {"stated": 1, "true": 0, "truth": 1, "recalled": 0}


def test_empty_and_ungradeable_text_have_undefined_precision():
    for text in ("", "   ", None, "stock photo free download"):
        r = grade_caption(text, truth())
        assert r["precision"] is None and r["recall"] == 0.0 and r["f1"] == 0.0
        assert r["n_stated"] == 0 and r["n_truth"] == 11
    assert grade_caption("stock photo free download", truth())["length_words"] == 4


def test_repetition_counts_distinct_facts_only():
    r = grade_caption("a large red circle at the top left. " * 5, truth())
    assert (r["n_stated"], r["n_true_stated"], r["precision"]) == (4, 4, 1.0)
    assert r["recall"] == pytest.approx(4 / 11)
    r = grade_caption("a large red circle at the top left. a yellow star. " * 5, truth())
    assert (r["n_stated"], r["n_true_stated"]) == (6, 4)
    assert r["hallucinated"] == ["no such object: yellow star"]


def test_extra_object_of_an_existing_shape_is_hallucinated():
    r = grade_caption("a large red circle at the top left. a small red circle at the bottom left.", truth())
    assert (r["n_stated"], r["n_true_stated"]) == (8, 4)
    assert r["hallucinated"] == ["no such object: small red circle at the bottom left"]


def test_concat_format_grades_the_union_of_both_parts():
    long = "a large red circle at the top left. a small blue square at the center."
    r = grade_caption(f"### Short description:\nred circle stock photo\n\n### Long description:\n{long}", truth())
    assert (r["n_stated"], r["n_true_stated"], r["n_recalled"]) == (8, 8, 8)  # "red circle" merges into the long one
    r = grade_caption(f"### Short description:\nblue circle free download\n\n### Long description:\n{long}", truth())
    # the alt-text's blue circle contradicts the long description's: a second circle, which the image lacks
    assert (r["n_stated"], r["n_true_stated"]) == (10, 8)
    assert r["precision"] == pytest.approx(0.8)


def test_relations_in_both_directions_count_once():
    text = ("a red circle. a blue square. the circle is above the square. the square is below the circle. "
            "the square is to the right of the circle.")
    r = grade_caption(text, truth())
    assert (r["n_stated"], r["n_true_stated"]) == (6, 6)  # 4 object facts + "above" + "left of"
    assert r["n_recalled"] == 5  # shape+color of both objects + the one pair


def test_free_text_positions_and_predicates():
    p = parse_caption("At the center there is a small blue square. A large, red circle in the upper left corner; "
                      "the circle is red and large.")
    assert [(m.shape, m.color, m.size, m.position) for m in p.mentions] == [
        ("square", "blue", "small", "center"), ("circle", "red", "large", "top left")]
    r = grade_caption('the word "cat" is written at the bottom. the text "cta" is at the top.', truth())
    assert (r["n_stated"], r["n_true_stated"]) == (4, 2)  # cat ✓, bottom center ✓, "cta" ✗, top center ✗


def test_grounding_iou_matched_by_description():
    text = "a large red circle [000,000,500,500] at the top left. a small blue square [400,400,600,600]."
    sq = (150 * 150) / (200 * 200 + 200 * 200 - 150 * 150)
    assert grade_grounding(text, truth()) == pytest.approx((1.0 + sq) / 2)
    d = grounding_details(text + " a green star [000,000,100,100].", truth())
    assert d["mean_iou"] == pytest.approx((1.0 + sq + 0.0) / 3)
    assert (d["n_boxes"], d["n_invented"]) == (3, 1)
    assert grade_grounding("a red circle at the top left.", truth()) == 0.0  # no boxes at all
    # boxes are matched by description, not by order: swapping the order changes nothing
    swapped = "a small blue square [400,400,600,600]. a large red circle [000,000,500,500]."
    assert grade_grounding(swapped, truth()) == pytest.approx((1.0 + sq) / 2)


@pytest.mark.parametrize("answer,gold,skill,ok", [
    ("Red.", "red", "color", True),
    ("It is a red one", "red", "color", True),
    ("red or blue", "red", "color", False),
    ("blue", "red", "color", False),
    ("The top-left corner.", "top left", "position", True),
    ("top", "top left", "position", False),
    ("middle", "center", "position", True),
    ("Three", "3", "count", True),
    ("3 objects", "3", "count", True),
    ("4", "3", "count", False),
    ("Yes, it is.", "yes", "spatial", True),
    ("no", "yes", "spatial", False),
    ('The word is "cat".', "cat", "ocr", True),
    ("There is no text.", "none", "ocr", True),
    ("cat", "none", "ocr", False),
    ("circles", "circle", "shape", True),
    ("It is called vorna.", "vorna", "name", True),
    ("vorna or kelbo", "vorna", "name", False),
    ("the red circle", "vorna", "name", False),
])
def test_vqa_normalisation(answer, gold, skill, ok):
    assert grade_vqa(answer, {"question": "?", "answer": gold, "skill": skill}) is ok


def test_normalize_answer():
    assert normalize_answer('  The "Top-Left" corner! ') == "top left corner"


def test_grade_eval_aggregates_exact_numbers():
    a = dict(truth(), id="a", alt_text="blue circle stock photo",
             vqa=[{"question": "q", "answer": "red", "skill": "color"},
                  {"question": "q", "answer": "2", "skill": "count"}])
    b = dict(truth(), id="b", alt_text="image",
             vqa=[{"question": "q", "answer": "yes", "skill": "spatial"}])
    preds = {"captions": {"a": TRUE_CAPTION, "b": ""},
             "vqa": {"a": ["red", "three"], "b": ["yes"]},
             "grounding": {"a": "a large red circle [000,000,500,500].", "b": ""}}
    m = grade_eval(preds, [a, b])
    assert m["n_eval"] == 2
    assert m["caption_precision"] == 1.0          # b stated nothing: left out of precision…
    assert m["caption_recall"] == 0.5             # …but counts 0 in recall,
    assert m["caption_p_x_r"] == 0.5 and m["caption_f1"] == 0.5   # F1 and precision × recall
    assert m["caption_empty_rate"] == 0.5
    assert m["caption_length_words"] == 15.5
    assert m["caption_distinct_rate"] == 1.0
    assert grade_eval({"captions": {"a": "a red circle.", "b": "a  red circle."}}, [a, b])["caption_distinct_rate"] == 0.5
    assert (m["vqa_acc_color"], m["vqa_acc_count"], m["vqa_acc_spatial"]) == (1.0, 0.0, 1.0)
    assert m["vqa_acc"] == pytest.approx(2 / 3)
    assert m["grounding_iou"] == pytest.approx((1.0 / 2 + 0.0) / 2)
    alt = grade_alt_text([a, b])
    # "blue circle": circle exists ✓, blue ✗; "image" states nothing
    assert (alt["caption_precision"], alt["caption_recall"]) == (0.5, pytest.approx(1 / 22))
    assert alt["caption_p_x_r"] == pytest.approx(0.5 * (1 / 11) / 2)


def test_missing_predictions_count_as_wrong():
    a = dict(truth(), id="a", vqa=[{"question": "q", "answer": "red", "skill": "color"}])
    m = grade_eval({"vqa": {"other-id": ["red"]}}, [a])
    assert m["vqa_acc_color"] == 0.0 and "caption_precision" not in m


def test_bad_truth_and_predictions_raise_one_line_errors():
    with pytest.raises(InputError, match="ground truth has no 'objects'"):
        grade_caption("a red circle", {"word": "cat"})
    with pytest.raises(InputError, match="predictions must be a dict"):
        grade_eval(["a"], [])


def test_truth_from_meta_tells_synthetic_from_other_images():
    import json
    from curator.world.grade import truth_from_meta
    assert truth_from_meta({"aliases": ["a.jpg"], "original_mode": "CMYK"}) is None
    assert truth_from_meta("") is None and truth_from_meta(None) is None
    t = truth_from_meta(json.dumps(TRUTH))
    assert [o["cell"] for o in t["objects"]] == [[0, 0], [1, 1]]
    assert "cell" not in TRUTH["objects"][0]  # the caller's dict is not modified
