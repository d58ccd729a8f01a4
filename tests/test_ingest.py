"""Ingest of every source kind into a real store, idempotent reruns, and a generated bad-input corpus."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from PIL import Image

from curator import schema
from curator.errors import InputError
from curator.ingest import ingest, normalize_image, Rejected


def png(color, size=(8, 8), mode="RGB") -> bytes:
    b = io.BytesIO()
    Image.new(mode, size, color).save(b, "PNG")
    return b.getvalue()


def jpg(color, size=(8, 8)) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", size, color).save(b, "JPEG", quality=90)
    return b.getvalue()


def make_folder(root, n=4):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"img{i}.png").write_bytes(png((i * 40, 10, 10)))
    return {f"img{i}.png": f"caption number {i}" for i in range(n)}


def stored(store):
    return store.sql("SELECT i.uri, c.text FROM images i LEFT JOIN captions c USING (image_id) "
                     "ORDER BY i.uri").to_pylist()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_folder_with_captions_file(tmp_store, tmp_path, fmt):
    caps = make_folder(tmp_path / "imgs")
    path = tmp_path / f"caps.{fmt}"
    rows = [{"file": k, "caption": v} for k, v in caps.items()]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        path.write_text("file,caption\n" + "".join(f"{r['file']},{r['caption']}\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    rep = ingest(tmp_store, folder=str(tmp_path / "imgs"), captions=str(path))
    assert (rep.counts["images_added"], rep.counts["captions_added"]) == (4, 4)
    got = stored(tmp_store)
    assert [(os.path.basename(r["uri"]), r["text"]) for r in got] == sorted(caps.items())
    cap = tmp_store.sql("SELECT * FROM captions LIMIT 1").to_pylist()[0]
    assert (cap["round"], cap["kind"], cap["captioner"], cap["finish_reason"]) == (0, "original", "source", "source")
    assert cap["caption_id"] == schema.caption_key(cap["image_id"], 0, "original", "source", "")


def test_reingest_adds_nothing_and_makes_no_commit(tmp_store, tmp_path):
    make_folder(tmp_path / "imgs")
    for i in range(4):
        (tmp_path / "imgs" / f"img{i}.txt").write_text(f"side {i}")   # sidecar captions
    first = ingest(tmp_store, folder=str(tmp_path / "imgs"))
    assert (first.counts["images_added"], first.counts["captions_added"]) == (4, 4)
    v = tmp_store.versions()
    again = ingest(tmp_store, folder=str(tmp_path / "imgs"))
    c = again.counts
    assert (c["images_added"], c["images_existing"], c["captions_added"], c["captions_existing"]) == (0, 4, 0, 4)
    assert {t: n for t, n in tmp_store.versions().items() if t != "runs"} == {t: n for t, n in v.items() if t != "runs"}
    assert tmp_store.sql("SELECT count(*) AS n FROM runs WHERE kind = 'ingest' AND status = 'ok'").column(0)[0].as_py() == 2


def test_manifest_jsonl_and_parquet(tmp_store, tmp_path):
    (tmp_path / "d").mkdir()
    rows = []
    for i in range(3):
        (tmp_path / "d" / f"{i}.jpg").write_bytes(jpg((i * 80, 0, 0)))
        rows.append({"file": f"d/{i}.jpg", "caption": f"c{i}", "meta": {"k": i}})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    pq.write_table(pa.Table.from_pylist([{"file": r["file"], "caption": r["caption"]} for r in rows[1:]]),
                   tmp_path / "m.parquet")
    a = ingest(tmp_store, manifest=str(tmp_path / "m.jsonl"))
    b = ingest(tmp_store, manifest=str(tmp_path / "m.parquet"))
    assert (a.counts["images_added"], b.counts["images_added"], b.counts["images_existing"]) == (2, 1, 1)
    imgs = tmp_store.sql("SELECT format, meta, source, bytes FROM images ORDER BY uri").to_pylist()
    # Clean RGB JPEGs are stored with their original bytes.
    assert [r["bytes"] for r in imgs] == [(tmp_path / "d" / f"{i}.jpg").read_bytes() for i in range(3)]
    assert [r["format"] for r in imgs] == ["JPEG"] * 3
    assert json.loads(imgs[0]["meta"]) == {"k": 0}
    assert [t["text"] for t in stored(tmp_store)] == ["c0", "c1", "c2"]


def test_hf_dataset_saved_to_disk_and_parquet(tmp_store, tmp_path):
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (6, 6), (i * 50, 0, 0)) for i in range(3)],
                                     "text": [f"hf {i}" for i in range(3)]}, features=feats)
    ds.save_to_disk(str(tmp_path / "saved"))
    r = ingest(tmp_store, hf=str(tmp_path / "saved"))
    assert (r.counts["images_added"], r.counts["captions_added"]) == (3, 3)
    (tmp_path / "pq").mkdir()
    ds2 = datasets.Dataset.from_dict({"image": [Image.new("RGB", (6, 6), (0, i * 50 + 1, 0)) for i in range(2)],
                                      "text": [f"pq {i}" for i in range(2)]}, features=feats)
    ds2.to_parquet(str(tmp_path / "pq" / "train.parquet"))
    r2 = ingest(tmp_store, hf=str(tmp_path / "pq"))
    assert r2.counts["images_added"] == 2
    (tmp_path / "imf").mkdir()   # an imagefolder with captions in metadata.jsonl
    for i in range(2):
        Image.new("RGB", (6, 6), (0, 0, i * 50 + 3)).save(tmp_path / "imf" / f"f{i}.png")
    (tmp_path / "imf" / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"f{i}.png", "text": f"imf {i}"}) + "\n" for i in range(2)))
    r3 = ingest(tmp_store, hf=str(tmp_path / "imf"))
    assert (r3.counts["images_added"], r3.counts["captions_added"]) == (2, 2)
    texts = sorted(tmp_store.sql("SELECT text FROM captions").column("text").to_pylist())
    assert texts == ["hf 0", "hf 1", "hf 2", "imf 0", "imf 1", "pq 0", "pq 1"]
    assert set(tmp_store.sql("SELECT source FROM images").column(0).to_pylist()) == {"hf"}
    with pytest.raises(InputError, match="^dataset has no column 'picture'"):
        ingest(tmp_store, hf=str(tmp_path / "saved"), image_column="picture")


def _tar_add(tf, name, data: bytes):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def test_webdataset_shards_img2dataset_layout(tmp_store, tmp_path):
    for s in range(2):
        with tarfile.open(tmp_path / f"{s:05d}.tar", "w") as tf:
            for i in range(3):
                key = f"{s:05d}{i:04d}"
                _tar_add(tf, f"{key}.jpg", jpg((s * 100, i * 60, 0)))
                _tar_add(tf, f"{key}.txt", f"wds {s} {i}".encode())
                _tar_add(tf, f"{key}.json", json.dumps({"url": f"http://x/{key}", "key": key}).encode())
    (tmp_path / "00002.tar").write_bytes(b"this is not a tar")
    # A shard cut off mid-way: the samples before the cut land, the rest is one counted rejection.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(3):
            _tar_add(tf, f"cut{i}.jpg", jpg((250, 250, i * 70)))
            _tar_add(tf, f"cut{i}.txt", f"cut {i}".encode())
    first = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getmembers()[2].offset   # header of cut1.jpg
    (tmp_path / "00003.tar").write_bytes(buf.getvalue()[: first + 700])
    r = ingest(tmp_store, webdataset=[str(tmp_path)])
    assert (r.counts["images_added"], r.counts["captions_added"], r.counts["rejected"]) == (7, 7, {"bad_tar": 2})
    assert r.counts["examples"]["bad_tar"][1].startswith(f"{tmp_path / '00003.tar'} (after 1 samples: ")
    row = tmp_store.sql("SELECT uri, meta FROM images ORDER BY uri LIMIT 1").to_pylist()[0]
    assert row["uri"].endswith("00000.tar#000000000")
    assert json.loads(row["meta"])["wds"]["url"] == "http://x/000000000"


def test_synthetic_through_the_cli(tmp_path):
    store = tmp_path / "st"
    out = run_cli("ingest", "--synthetic", "12", "--seed", "3", "--json", store=store).stdout
    c = json.loads(out)
    assert (c["images_added"], c["captions_added"], c["rejected"]) == (12, 12, {})
    again = json.loads(run_cli("ingest", "--synthetic", "12", "--seed", "3", "--json", store=store).stdout)
    assert (again["images_added"], again["images_existing"]) == (0, 12)
    from curator.store import Store
    from curator.world.synthetic import iter_synthetic

    first_png, alt, meta = next(iter(iter_synthetic(1, 3)))
    row = Store(str(store)).sql(f"SELECT i.meta, c.text FROM images i JOIN captions c USING (image_id) "
                                f"WHERE image_id = '{schema.image_key(first_png)}'").to_pylist()[0]
    assert row["text"] == alt and json.loads(row["meta"])["objects"] == json.loads(json.dumps(meta))["objects"]


def build_bad_corpus(d):
    """Each file exercises one rejection or conversion path; returns nothing (expectations are in the test)."""
    d.mkdir()
    (d / "good.png").write_bytes(png((200, 0, 0)))
    (d / "good.txt").write_text("a red square")
    (d / "zero.png").write_bytes(b"")
    full = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, "PNG")
    (d / "truncated.png").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (d / "notimage.jpg").write_text("<html>404 not found</html>")
    (d / "bomb.png").write_bytes(png(0, size=(2000, 2000), mode="L"))      # 4 Mpx > the test cap of 1 Mpx
    b = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(b, "JPEG")
    (d / "cmyk.jpg").write_bytes(b.getvalue())
    (d / "cmyk.txt").write_text("cmyk caption")
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(d / "deep16.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0] + [0, 0, 255] + [0, 0, 0] * 254)
    pal.save(d / "palette.png", transparency=1)
    (d / "gray.png").write_bytes(png(77, mode="L"))
    (d / "gray.txt").write_bytes(b"caf\xe9 latin-1 bytes")                 # invalid UTF-8 caption
    (d / "blank.png").write_bytes(png((1, 2, 3)))
    (d / "blank.txt").write_text("   \n")                                  # empty caption
    (d / "copy_of_good.png").write_bytes(png((200, 0, 0)))                 # same bytes, another name
    (d / "notes.md").write_text("not an image, ignored")


def test_bad_input_corpus_is_counted_with_reasons(tmp_store, tmp_path):
    build_bad_corpus(tmp_path / "bad")
    rep = ingest(tmp_store, folder=str(tmp_path / "bad"), max_pixels=1_000_000)
    c = rep.counts
    assert c["seen"] == 11
    assert c["rejected"] == {"empty_file": 1, "truncated": 1, "not_an_image": 1, "decompression_bomb": 1}
    assert c["caption_rejected"] == {"invalid_utf8": 1, "empty_caption": 1, "no_caption": 3}
    assert c["converted"] == {"CMYK": 1, "I;16": 1, "P": 1, "L": 1}
    assert (c["images_added"], c["captions_added"], c["duplicates_in_input"], c["ignored_files"]) == (6, 2, 1, 1)
    assert c["examples"]["decompression_bomb"] == [
        f"{tmp_path / 'bad' / 'bomb.png'} (2000x2000 = 4000000 pixels > cap 1000000)"]
    # Conversions: RGB PNG bytes, original mode in meta, 16-bit scaled (not clipped), alpha on white.
    rows = {os.path.basename(r["uri"]): r for r in tmp_store.sql("SELECT * FROM images").to_pylist()}
    meta = json.loads(rows["palette.png"]["meta"])
    assert meta == {"alpha": "composited_on_white", "converted": "rgb_png", "original_format": "PNG",
                    "original_mode": "P"}
    im = Image.open(io.BytesIO(rows["palette.png"]["bytes"]))
    assert (im.format, im.mode, im.getpixel((0, 0))) == ("PNG", "RGB", (255, 255, 255))
    assert Image.open(io.BytesIO(rows["deep16.png"]["bytes"])).getpixel((0, 0)) == (156, 156, 156)  # 40000 >> 8
    assert Image.open(io.BytesIO(rows["gray.png"]["bytes"])).getpixel((0, 0)) == (77, 77, 77)
    assert all(r["image_id"] == schema.image_key(r["bytes"]) for r in rows.values())
    # The run row carries the same counts; the summary names every reason.
    run = tmp_store.sql(f"SELECT status, counts FROM runs WHERE run_id = '{rep.run_id}'").to_pylist()[0]
    assert run["status"] == "ok" and json.loads(run["counts"])["rejected"] == c["rejected"]
    text = "\n".join(rep.summary_lines())
    for reason in ("empty_file", "truncated", "not_an_image", "decompression_bomb", "invalid_utf8", "empty_caption"):
        assert reason in text


def test_missing_and_unreadable_files_in_a_manifest(tmp_store, tmp_path):
    (tmp_path / "ok.png").write_bytes(png((5, 5, 5)))
    (tmp_path / "adir.png").mkdir()                    # open() fails even as root: an honest "unreadable"
    (tmp_path / "locked.png").write_bytes(png((6, 6, 6)))
    os.chmod(tmp_path / "locked.png", 0)
    lines = [json.dumps({"file": f, "caption": "x"}) for f in ("ok.png", "gone.png", "adir.png", "locked.png")]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n{not json\n")
    c = ingest(tmp_store, manifest=str(tmp_path / "m.jsonl")).counts
    locked_readable = os.access(tmp_path / "locked.png", os.R_OK)   # root ignores mode 000
    assert c["rejected"] == {"missing_file": 1, "bad_record": 1,
                             "unreadable": 1 if locked_readable else 2}
    assert c["images_added"] == (2 if locked_readable else 1)
    assert c["examples"]["missing_file"] == [str(tmp_path / "gone.png")]


def test_normalize_image_keeps_clean_rgb_bytes():
    data = png((1, 2, 3))
    out, w, h, fmt, extra = normalize_image(data)
    assert (out, w, h, fmt, extra) == (data, 8, 8, "PNG", {})
    with pytest.raises(Rejected) as e:
        normalize_image(b"GIF89a\x01")
    assert e.value.reason == "not_an_image"


def test_cli_ingest_needs_exactly_one_source(tmp_path):
    res = run_cli("ingest", store=tmp_path / "st", check=False)
    assert res.returncode == 1
    assert res.stderr == ("Error: ingest needs exactly one source — got none — pass one of --folder, --manifest, "
                          "--hf, --webdataset, --synthetic N\n")


# ---------------------------------------------------------------- real photographs: EXIF, animation, size
def _red_blue_jpeg(size=(40, 20), orientation: int | None = 6, quality=95) -> bytes:
    """Stored landscape, red left half / blue right half; EXIF orientation 6 = turn 90° clockwise to view,
    so the picture a person sees is portrait with red on TOP and blue below."""
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    b = io.BytesIO()
    im.save(b, "JPEG", quality=quality, exif=exif.tobytes())
    return b.getvalue()


def _model_view(store, image_size):
    """What the recaption engines are handed: load_batch's decoded, resized images."""
    from curator.engines.work import Job, WorkItem, load_batch

    ids = store.sql("SELECT image_id FROM images ORDER BY uri").column(0).to_pylist()
    job = Job(store_uri=store.uri, storage_options=None, model="m", captioner="c", round=1, kind="self",
              sampling={}, run_id="r", batch_size=8, image_size=image_size)
    ok, images, fails = load_batch(store, job, [WorkItem(i, "p", "", f"c{i}") for i in ids])
    assert fails == [] and len(images) == len(ids)
    return images


def _top_bottom(im):
    a = np.asarray(im).astype(int)
    h = a.shape[0]
    return a[: h // 3].mean(axis=(0, 1)).round(), a[-(h // 3):].mean(axis=(0, 1)).round()


def test_exif_orientation_is_applied_exactly_once(tmp_store, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "turned.jpg").write_bytes(_red_blue_jpeg())
    rep = ingest(tmp_store, folder=str(tmp_path / "p"))
    assert rep.counts["converted"] == {"EXIF rotation": 1}
    row = tmp_store.sql("SELECT width, height, format, meta, bytes FROM images").to_pylist()[0]
    # Stored upright (portrait), lossless from the decoded JPEG, with no orientation left in the bytes.
    assert (row["width"], row["height"], row["format"]) == (20, 40, "PNG")
    assert json.loads(row["meta"]) == {"converted": "rgb_png", "exif_orientation": 6, "original_format": "JPEG",
                                       "original_mode": "RGB"}
    stored_im = Image.open(io.BytesIO(row["bytes"]))
    assert stored_im.getexif().get(0x0112) is None
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(_red_blue_jpeg())))
    assert np.array_equal(np.asarray(stored_im), np.asarray(upright))
    # The model sees red on top, blue below (applied twice it would be upside down; never, left/right).
    (seen,) = _model_view(tmp_store, (16, 16))
    top, bottom = _top_bottom(seen)
    assert seen.size == (16, 16)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60, (top, bottom)
    assert np.array_equal(np.asarray(seen), np.asarray(upright.resize((16, 16), Image.BICUBIC)))
    # Bytes that still carry the tag (written to the store without ingest) are turned by the engine, once.
    from curator.engines.work import decode_resize

    raw = decode_resize(_red_blue_jpeg(), (16, 16), None)
    assert np.array_equal(np.asarray(raw), np.asarray(seen))
    t, b = _top_bottom(decode_resize(_red_blue_jpeg(size=(800, 400)), (16, 16), None))   # the draft path
    assert t[0] > 200 and b[2] > 200, (t, b)


def test_upright_and_orientation_1_jpegs_keep_their_bytes(tmp_store, tmp_path):
    (tmp_path / "p").mkdir()
    for name, o in (("none.jpg", None), ("one.jpg", 1)):
        (tmp_path / "p" / name).write_bytes(_red_blue_jpeg(orientation=o))
    ingest(tmp_store, folder=str(tmp_path / "p"))
    rows = tmp_store.sql("SELECT uri, width, height, format, meta, bytes FROM images ORDER BY uri").to_pylist()
    for r in rows:
        assert r["bytes"] == (tmp_path / "p" / os.path.basename(r["uri"])).read_bytes()
        assert (r["width"], r["height"], r["format"], r["meta"]) == (40, 20, "JPEG", "{}")


def test_large_photo_is_stored_whole_and_resized_by_the_engine(tmp_store, tmp_path):
    (tmp_path / "p").mkdir()
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).resize((1800, 1200), Image.NEAREST)
    b = io.BytesIO()
    big.save(b, "JPEG", quality=90)
    (tmp_path / "p" / "big.jpg").write_bytes(b.getvalue())
    ingest(tmp_store, folder=str(tmp_path / "p"))
    row = tmp_store.sql("SELECT width, height, format, bytes FROM images").to_pylist()[0]
    assert (row["width"], row["height"], row["format"], row["bytes"]) == (1800, 1200, "JPEG", b.getvalue())
    (seen,) = _model_view(tmp_store, (64, 64))
    full = Image.open(io.BytesIO(b.getvalue())).convert("RGB").resize((64, 64), Image.BICUBIC)
    assert seen.size == (64, 64)   # decoded at 1/8 scale (225x150), then resized: close to a full decode
    assert np.abs(np.asarray(seen, dtype=int) - np.asarray(full, dtype=int)).mean() < 6
    (dyn,) = _model_view_pixels(tmp_store, 128 * 128)
    assert dyn.width * dyn.height <= 128 * 128 and abs(dyn.width / dyn.height - 1.5) < 0.02


def _model_view_pixels(store, max_pixels):
    from curator.engines.work import decode_resize

    data = store.sql("SELECT bytes FROM images").column(0).to_pylist()
    return [decode_resize(d, None, max_pixels) for d in data]


def test_animated_files_keep_their_first_frame(tmp_store, tmp_path):
    (tmp_path / "p").mkdir()
    frames = [Image.new("RGB", (12, 10), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    frames[0].save(tmp_path / "p" / "anim.png", save_all=True, append_images=frames[1:], duration=50)   # APNG
    frames[0].save(tmp_path / "p" / "anim.webp", save_all=True, append_images=frames[1:], duration=50,
                   lossless=True)
    (tmp_path / "p" / "anim.gif").write_bytes((tmp_path / "a.gif").read_bytes())
    rep = ingest(tmp_store, folder=str(tmp_path / "p"))
    assert rep.counts["images_added"] == 1 and rep.counts["duplicates_in_input"] == 2   # same first frame
    row = tmp_store.sql("SELECT uri, width, height, format, meta, bytes FROM images").to_pylist()[0]
    meta = json.loads(row["meta"])
    assert (meta["frames"], meta["kept_frame"], meta["converted"]) == (3, 0, "rgb_png")
    im = Image.open(io.BytesIO(row["bytes"]))
    assert (im.format, getattr(im, "n_frames", 1), im.size) == ("PNG", 1, (12, 10))
    assert np.unique(np.asarray(im).reshape(-1, 3), axis=0).tolist() == [[250, 0, 0]]
    for name in ("anim.gif", "anim.webp", "anim.png"):
        _, w, h, fmt, extra = normalize_image((tmp_path / "p" / name).read_bytes())
        assert (w, h, fmt, extra["frames"], extra["kept_frame"]) == (12, 10, "PNG", 3, 0), name


def test_mpo_camera_jpeg_keeps_its_bytes(tmp_store, tmp_path):
    b = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(b, "MPO", save_all=True,
                                                   append_images=[Image.new("RGB", (8, 6), (0, 0, 0))])
    out, w, h, fmt, extra = normalize_image(b.getvalue())
    assert (out, w, h, fmt) == (b.getvalue(), 16, 12, "JPEG")
    assert extra == {"frames": 2, "kept_frame": 0, "original_format": "MPO"}


def test_heic_without_a_plugin_is_refused_with_the_fix(tmp_store, tmp_path):
    fake = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(Rejected) as e:
        normalize_image(fake)
    assert (e.value.reason, e.value.detail) == (
        "not_an_image", "HEIC/HEIF: Pillow needs the pillow-heif plugin (pip install pillow-heif), or convert to JPEG")


def test_summary_of_an_uncaptioned_folder(tmp_store, tmp_path):
    make_folder(tmp_path / "imgs", n=3)
    lines = ingest(tmp_store, folder=str(tmp_path / "imgs")).summary_lines()
    assert lines[3:7] == ["  captions added      0   (already in store: 0)",
                          "  without a caption   3   (kept; `curator recaption` writes their captions)",
                          "  rejected images     0", "  caption problems    0"]
