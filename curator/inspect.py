"""A FiftyOne dataset built from a SQL sample of the store, and the App to look at it.

One FiftyOne sample per image (keyed by image_id; re-running merges into the same persistent dataset,
never duplicates), one string field per caption version named `r{round}_{kind}` (the latest version of
that round×kind, so a derived repetition-cut version shows instead of its raw parent), verdicts as tags
`rejected:r1_self:repetition` plus a `r1_self_verdict` field, and for synthetic images the grader's view
of each caption: `r1_self_precision`, `r1_self_recall`, `r1_self_hallucinated` (the false facts).

Only the sample (`--where`, `--limit`) is copied, never the whole store; images are written once to a
cache directory keyed by image_id (content hash), so several datasets share them.

FiftyOne needs a MongoDB: its bundled mongod (see scripts/setup_inspect.sh for machines without internet,
where the OpenSSL 1.1 it links against sits in .deps/), or an existing server via `database_uri`.
"""
from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError, InputError, StoreError, require
from curator.show import CaptionVersion, _caption_rows, _fact_str, _meta

DEFAULT_NAME = "curator"
DEFAULT_PORT = 5151
DEFAULT_LIMIT = 500
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "vila2-curator", "images")
LIBSSL_ENV = "CURATOR_LIBSSL_DIR"      # where OpenSSL 1.1 for the bundled mongod lives (set-up script: .deps/)
_EXT = {"PNG": "png", "JPEG": "jpg", "JPG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def _libssl_dirs() -> list[str]:
    """Project-local OpenSSL 1.1 folders (scripts/setup_inspect.sh puts one in <repo>/.deps)."""
    cands = [os.environ.get(LIBSSL_ENV, "")]
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        cands.append(str(root / ".deps" / "libssl1.1" / "usr" / "lib" / "x86_64-linux-gnu"))
    return [c for c in dict.fromkeys(cands) if c and os.path.exists(os.path.join(c, "libcrypto.so.1.1"))]


def prepare_env(database_uri: str | None = None) -> None:
    """Environment FiftyOne reads at import (and its mongod / App server children inherit)."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    if database_uri:
        if "fiftyone" in sys.modules:
            import fiftyone as fo

            if fo.config.database_uri != database_uri:
                raise InputError(f"cannot switch FiftyOne to {database_uri}",
                                 "fiftyone is already imported in this process with another database",
                                 "set FIFTYONE_DATABASE_URI before starting Python")
        os.environ["FIFTYONE_DATABASE_URI"] = database_uri
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        # The bundled mongod is 6.0, which FiftyOne accepts with a warning this silences.
        os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
        have = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
        add = [d for d in _libssl_dirs() if d not in have]
        if add:
            os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(add + [p for p in have if p])


def fiftyone(database_uri: str | None = None):
    """`import fiftyone` with the environment above, or MissingExtraError naming the inspect extra."""
    prepare_env(database_uri)
    return require("fiftyone", "inspect", "curator inspect")


def field_name(round_: int, kind: str) -> str:
    return f"r{int(round_)}_" + re.sub(r"[^A-Za-z0-9_]", "_", kind)


@dataclass
class InspectResult:
    dataset: object               # fiftyone.Dataset
    name: str
    added: int                    # samples new to the dataset
    updated: int                  # samples merged into existing ones
    caption_fields: list[str]     # r{round}_{kind} fields present in this sample


def _sample_sql(where: str | None, limit: int | None) -> str:
    q = "SELECT image_id FROM images" + (f" WHERE ({where})" if where else "") + " ORDER BY image_id"
    return q + (f" LIMIT {int(limit)}" if limit else "")


def _cache_paths(store, imgs: list[dict], cache_dir: str) -> dict[str, str]:
    """A local file per image: its own uri if that is a readable local file with no inline bytes,
    otherwise the bytes written once to cache_dir/<id[:2]>/<id>.<ext>."""
    out, need = {}, []
    for r in imgs:
        ext = _EXT.get((r["format"] or "").upper(), "png")
        p = os.path.join(cache_dir, r["image_id"][:2], f"{r['image_id']}.{ext}")
        if os.path.exists(p):
            out[r["image_id"]] = p
        elif r["external"] and r["uri"] and os.path.isfile(r["uri"]):
            out[r["image_id"]] = os.path.abspath(r["uri"])
        else:
            out[r["image_id"]] = p
            need.append(r["image_id"])
    for s in range(0, len(need), 256):
        for iid, data in store.image_bytes(need[s:s + 256]).items():
            if data is None:
                raise StoreError(f"image {iid} has no bytes in the store and its uri is not a local file",
                                 "FiftyOne needs a file to show", "run inspect where the original files are")
            p = out[iid]
            os.makedirs(os.path.dirname(p), exist_ok=True)
            tmp = f"{p}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
    return out


def _latest(versions: list[CaptionVersion]) -> CaptionVersion:
    return max(versions, key=lambda c: (c.created_at, c.caption_id))


def sample_fields(img: dict, versions: list[CaptionVersion]) -> tuple[dict, list[str]]:
    """The FiftyOne fields and tags of one image (pure data; build_dataset wraps them in a Sample)."""
    from curator.world.grade import grade_caption, truth_from_meta

    fields: dict = {"image_id": img["image_id"], "source": img["source"] or "", "split": img["split"] or "",
                    "uri": img["uri"] or ""}
    tags: list[str] = []
    by_slot: dict[tuple[int, str], list[CaptionVersion]] = defaultdict(list)
    for c in versions:
        by_slot[(c.round, c.kind)].append(c)
    truth = truth_from_meta(_meta(img["meta"]))     # None unless the image carries ground truth
    for (rnd, kind) in sorted(by_slot):
        c = _latest(by_slot[(rnd, kind)])
        f = field_name(rnd, kind)
        fields[f] = c.text
        rej = c.rejected_by
        fields[f + "_verdict"] = ("rejected: " + ", ".join(
            v.filter + (f" ({v.reason})" if v.reason else "") for v in rej)) if rej else "accepted"
        tags += [f"rejected:{f}:{v.filter}" for v in rej]
        if truth:
            g = grade_caption(c.text, truth)
            # precision is None when the caption states nothing gradeable (the grader's convention)
            fields[f + "_precision"] = None if g["precision"] is None else float(g["precision"])
            fields[f + "_recall"] = float(g["recall"])
            fields[f + "_hallucinated"] = [_fact_str(x) for x in g["hallucinated"]]
    return fields, tags


def build_dataset(store, rounds=(0, 1, 2), where: str | None = None, limit: int | None = DEFAULT_LIMIT,
                  name: str = DEFAULT_NAME, cache_dir: str | None = None, database_uri: str | None = None,
                  kinds: list[str] | None = None, at=None) -> InspectResult:
    """Create or update the persistent FiftyOne dataset `name` from a SQL sample of the store
    (as of `at`, a tag such as "round-1" or a version, when given)."""
    rounds = sorted({int(r) for r in rounds})
    if not rounds:
        raise InputError("no rounds given", "inspect shows the caption versions of some rounds", "e.g. --rounds 0,1,2")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", name):
        raise InputError(f"invalid dataset name {name!r}", "names are letters, digits, '.', '_' and '-'",
                         "e.g. --name curator-round2")
    sample_q = _sample_sql(where, limit)
    imgs = store.sql(
        "SELECT image_id, uri, source, width, height, format, split, meta, bytes IS NULL AS external "
        f"FROM images WHERE image_id IN ({sample_q}) ORDER BY image_id", at=at).to_pylist()
    if not imgs:
        raise StoreError("no images to inspect", "the sample query selected none" + (f" (--where {where})" if where else ""),
                         "check --where against the images table (curator sql \"SELECT * FROM images LIMIT 3\")")
    cond = f"c.round IN ({','.join(map(str, rounds))}) AND c.image_id IN ({sample_q})"
    if kinds:
        cond += " AND c.kind IN (" + ",".join("'" + k.replace("'", "''") + "'" for k in kinds) + ")"
    caps: dict[str, list[CaptionVersion]] = defaultdict(list)
    for c in _caption_rows(store, cond, at):
        caps[c.image_id].append(c)
    fo = fiftyone(database_uri)
    paths = _cache_paths(store, imgs, cache_dir or DEFAULT_CACHE)
    samples, cap_fields = [], set()
    for img in imgs:
        fields, tags = sample_fields(img, caps.get(img["image_id"], []))
        cap_fields |= {k for k in fields if re.match(r"^r\d+_", k) and not re.search(
            r"_(verdict|precision|recall|hallucinated)$", k)}
        meta = None
        if img["width"] and img["height"]:
            meta = fo.ImageMetadata(width=img["width"], height=img["height"],
                                    mime_type="image/" + _EXT.get((img["format"] or "").upper(), "png")
                                    .replace("jpg", "jpeg"))
        samples.append(fo.Sample(filepath=paths[img["image_id"]], tags=tags, metadata=meta, **fields))

    if _dataset_exists(fo, name, database_uri):
        ds = fo.load_dataset(name)
        have = set(ds.distinct("image_id")) if "image_id" in ds.get_field_schema() else set()
    else:
        ds = fo.Dataset(name, persistent=True)
        have = set()
    updated = sum(1 for s in samples if s["image_id"] in have)
    _declare_fields(fo, ds, {k for s in samples for k in s.field_names})
    # merge_lists=False: a sample's tags are replaced as a whole, so a verdict that flips to keep
    # (re-thresholded filter) drops its old rejected:… tag.
    ds.merge_samples(samples, key_field="image_id", merge_lists=False, overwrite=True, progress=False)
    cap_list = sorted(cap_fields, key=_field_order)
    _app_layout(fo, ds, cap_list)
    return InspectResult(ds, name, added=len(samples) - updated, updated=updated, caption_fields=cap_list)


def _dataset_exists(fo, name: str, database_uri: str | None) -> bool:
    """The first database access, where a missing or unreachable MongoDB shows up: one line, not a traceback."""
    from fiftyone.core.service import ServiceException

    try:
        return fo.dataset_exists(name)
    except (ServiceException, ConnectionError) as e:
        where = database_uri or os.environ.get("FIFTYONE_DATABASE_URI") or "FiftyOne's bundled mongod"
        raise CuratorError(f"cannot reach FiftyOne's database ({where})", str(e).strip().splitlines()[0],
                           "start that MongoDB or fix --database-uri; offline machines: bash scripts/setup_inspect.sh "
                           ".venv (bundled mongod + OpenSSL 1.1)") from e


def _declare_fields(fo, ds, names: set[str]) -> None:
    """Declare the caption/grade fields up front: a field whose values are all None (precision of a caption
    stating nothing gradeable) would otherwise never enter the schema, as merge_samples skips None."""
    schema = ds.get_field_schema()
    for n in sorted(names - set(schema)):
        if not re.match(r"^r\d+_", n):
            continue
        if n.endswith(("_precision", "_recall")):
            ds.add_sample_field(n, fo.FloatField)
        elif n.endswith("_hallucinated"):
            ds.add_sample_field(n, fo.ListField, subfield=fo.StringField)
        else:
            ds.add_sample_field(n, fo.StringField)


def _field_order(f: str):
    m = re.match(r"^r(\d+)_(.*)$", f)
    return (int(m.group(1)), m.group(2) != "original", m.group(2) != "self", m.group(2))


def _app_layout(fo, ds, cap_fields: list[str]) -> None:
    """Caption fields first in the sidebar and shown on the grid tiles, next to the image."""
    all_caps = sorted({f for f in ds.get_field_schema() if re.match(r"^r\d+_[A-Za-z0-9_]+$", f)
                       and not re.search(r"_(verdict|precision|recall|hallucinated)$", f)}, key=_field_order)
    extra = sorted(f for f in ds.get_field_schema() if re.match(r"^r\d+_.*_(verdict|precision|recall|hallucinated)$", f))
    groups = fo.DatasetAppConfig.default_sidebar_groups(ds)
    taken = set(all_caps) | set(extra)
    for g in groups:
        g.paths = [p for p in g.paths if p not in taken]
    groups = [fo.SidebarGroupDocument(name="captions", paths=all_caps, expanded=True),
              fo.SidebarGroupDocument(name="grades and verdicts", paths=extra, expanded=False)] + \
        [g for g in groups if g.name != "captions"]
    ds.app_config.sidebar_groups = groups
    ds.app_config.active_fields = fo.ActiveFields(paths=all_caps)
    ds.save()


def app_url(address: str, port: int, name: str) -> str:
    return f"http://{address}:{port}/datasets/{name}"


def launch(dataset, port: int = DEFAULT_PORT, address: str = "127.0.0.1"):
    """Serve the App for `dataset` (no browser is opened; print app_url and open it yourself)."""
    import fiftyone as fo

    try:
        return fo.launch_app(dataset, port=port, address=address, auto=False)
    except OSError as e:
        raise CuratorError(f"cannot serve the FiftyOne App on {address}:{port}", str(e).splitlines()[0],
                           "pick another --port") from e
