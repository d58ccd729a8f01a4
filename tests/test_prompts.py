"""Prompts are data: the packaged YAML holds the method's prompts verbatim; the per-image draw is seeded,
stable and uniform; question pools serve the specialist-qa build; bad YAML fails with one-line errors."""
from __future__ import annotations

from collections import Counter

import pytest

from curator.errors import InputError
from curator.prompts import load_prompts, question_pool

METHOD = {   # vila2-method.md §1-2, verbatim
    "simple": "Describe the image briefly.",
    "long-v1": "Describe the image in details.",
    "long-v2": "Elaborate on the visual and narrative elements of the image in detail.",
    "long-v3": "Instead of describing the imaginary content, only describing the content one can determine "
               "confidently from the image. Do not describe the contents by itemizing them in list form. "
               "Minimize aesthetic descriptions as much as possible.",
    "spatial-v1": "Elaborate on the visual and narrative elements of the image in detail, with a focus on spatial relations.",
    "spatial-v2": "Can you explain the content of the image and their spatial relations in detail?",
    "grounding": "Elaborate on the visual and narrative elements in the image, and specify their location with [xmin,ymin,xmax,ymax].",
    "ocr": "Your task is to recognize and describe the text in the image. Please provide a brief description "
           "that focuses on the textual content.",
}


def test_packaged_prompts_are_verbatim():
    book = load_prompts()
    assert book.prompts == METHOD
    assert [p.id for p in book.prompt_set("vila2")] == ["long-v1", "long-v2", "long-v3"]
    assert [p.id for p in book.prompt_set("spatial")] == ["spatial-v1", "spatial-v2"]
    assert [p.id for p in book.prompt_set("long-v2")] == ["long-v2"]   # a prompt id is a one-prompt set
    assert question_pool("spatial")[1] == "Describe the image in details, with a focus on spatial relations."
    assert question_pool("ocr") == ["Describe the textual content in the image.", "Identify the text visible in this image.",
                                    "What words or phrases can you identify in the image?"]
    assert len(question_pool("grounding")) == 3


def test_draw_is_seeded_stable_and_uniform():
    book = load_prompts()
    ids = [f"{i:064x}" for i in range(3000)]
    draws = [book.draw("vila2", i, seed=0).id for i in ids]
    assert draws == [book.draw("vila2", i, seed=0).id for i in ids]          # rerun / other shard: same draw
    assert Counter(draws) == {"long-v1": 986, "long-v2": 1000, "long-v3": 1014}   # uniform within 1.5%
    assert draws != [book.draw("vila2", i, seed=1).id for i in ids]          # the seed changes the mix
    assert Counter(book.draw("spatial", i).id for i in ids) == {"spatial-v1": 1523, "spatial-v2": 1477}


def test_user_specialist_and_bad_files(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("prompts:\n  count: 'How many objects are there?'\nsets:\n  counting: [count]\n"
                 "question_pools:\n  counting: ['Count the objects.']\n")
    book = load_prompts(f)
    assert book.draw("counting", "ab").text == "How many objects are there?"
    assert question_pool("counting", f) == ["Count the objects."]
    with pytest.raises(InputError, match="no question pool for specialist 'spatial'"):
        question_pool("spatial", f)
    with pytest.raises(InputError, match="unknown prompt set 'vila3'"):
        load_prompts().prompt_set("vila3")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts:\n  a: 'x'\nsets:\n  s: [a, b]\n")
    with pytest.raises(InputError, match=r"prompt set 's' in .* names unknown prompts \['b'\]"):
        load_prompts(bad)
    bad.write_text("prompts:\n  a: 'x'\nextra: 1\n")
    with pytest.raises(InputError, match=r"has unknown keys \['extra'\]"):
        load_prompts(bad)
    with pytest.raises(InputError, match="not found"):
        load_prompts(tmp_path / "missing.yaml")
