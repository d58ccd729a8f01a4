"""Caption quality filters: scores computed once, verdicts stored, thresholds re-applied by SQL.

An op is one verb: each filter maps a caption to a score, and a threshold maps the score to keep or
(drop, reason). Every caption × filter gets one `verdicts` row (score, keep, reason, config JSON,
config_hash, run_id); captions are never deleted or rewritten. The repetition cut is the one filter
that *produces* text: it writes a new caption version (transform='repcut', parent = the raw caption)
and rejects the raw one, so the "latest accepted recaption" rule (docs/api.md) picks the cut.

Two implementations of the text checks, kept equal by a test:
  * `score_text` — plain Python, one caption at a time (readable reference, and the benchmark baseline);
  * `text_scores` — the same checks vectorized with Arrow compute + numpy (what runs); `text_scores_sql` is
    the same again as one DuckDB query, kept as the SQL form and for the benchmark.

Re-thresholding: each verdict's config carries `score_hash` = hash of the parameters that determine the
score (n for n-grams, the charset, the captioner for grounding). A run whose score parameters match
stored verdicts reuses those scores and only recomputes keep — in SQL — under the new thresholds.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa

from curator import schema
from curator.errors import InputError, check_round

# ------------------------------------------------------------------------------------------ config

# Each filter: score parameters (change the score → recompute) and thresholds (change keep only).
# The defaults are chosen on a labelled set of healthy and degenerate captions (curator/world/filter_cases.py,
# bench/bench_filters.py, docs/filters.md): each filter drops ≤ 1% of healthy short, long and very long captions
# and catches ≥ 95% of its own defect. n-grams are 10 words long: templated captions repeat 3-7-word phrases
# ("is left of the") dozens of times, a loop repeats everything.
DEFAULTS: dict[str, dict[str, dict]] = {
    "repetition": {"score": {}, "threshold": {}},                         # score = sentence k cut at (0 = none)
    "ngram": {"score": {"n": 10}, "threshold": {"max_repeat": 0.15}},     # share of repeated word n-grams
    "length": {"score": {}, "threshold": {"min_words": 5, "max_words": 1000}},
    "truncation": {"score": {}, "threshold": {}},                         # 1 = generation hit max_new_tokens
    "charset": {"score": {"charset": "latin"}, "threshold": {"max_bad_fraction": 0.0}},
    "template": {"score": {}, "threshold": {"max_fraction": 0.01, "min_count": 5}},  # images sharing the text
    "grounding": {"score": {"blank": "gray"}, "threshold": {"min_gain": 0.0}},      # nats/token the image adds
    "clip": {"score": {"model": "", "weights": ""}, "threshold": {"min_similarity": 0.2}},
}
# A filter whose scoring rule changed without a parameter changing: the version enters score_hash, so scores
# stored under the old rule are recomputed instead of reused (2: charset counts mojibake pairs).
SCORE_RULE = {"charset": 2}
TEXT_FILTERS = ["repetition", "ngram", "length", "truncation", "charset", "template"]
MODEL_FILTERS = ["grounding", "clip"]
ALL_FILTERS = TEXT_FILTERS + MODEL_FILTERS

# Characters a caption may hold. "latin": printable ASCII, tab/newline, Latin-1 + Latin Extended-A/B, and
# typographic punctuation (curly quotes, dashes, ellipsis) — what an English captioner legitimately writes —
# and no mojibake: a Latin-1 lead byte (Â..ô) read before a continuation byte (U+0080..U+00BF) or a cp1252
# punctuation mark ("Ã©" for "é", "â€™" for "’") counts as one bad match.
# "printable": any character except control characters and U+FFFD (the decoder's "broken bytes" mark).
# cp1252's punctuation, as a UTF-8 continuation byte decodes under Windows-1252
_CP1252 = "ŒœŠšŸŽžƒˆ˜–—‘’‚“”„†‡•…‰‹›€™"
CHARSETS_PY = {
    "latin": re.compile(f"[\\u00C2-\\u00F4][\\u0080-\\u00BF{_CP1252}]|[^\\x20-\\x7E\\n\\t\\u00A0-\\u024F\\u2010-\\u2027]"),
    "printable": re.compile("[\\x00-\\x08\\x0B-\\x1F\\x7F-\\x9F\\uFFFD]"),
}
CHARSETS_SQL = {   # the same classes in RE2 syntax (DuckDB, Arrow)
    "latin": f"[\\x{{C2}}-\\x{{F4}}][\\x{{80}}-\\x{{BF}}{_CP1252}]|[^\\x{{20}}-\\x{{7E}}\\n\\t\\x{{A0}}-\\x{{24F}}\\x{{2010}}-\\x{{2027}}]",
    "printable": "[\\x{00}-\\x{08}\\x{0B}-\\x{1F}\\x{7F}-\\x{9F}\\x{FFFD}]",
}


@dataclass
class FilterConfig:
    name: str
    score: dict = field(default_factory=dict)       # parameters that determine the score
    threshold: dict = field(default_factory=dict)   # parameters that only decide keep

    @property
    def score_hash(self) -> str:
        rule = {"rule": SCORE_RULE[self.name]} if self.name in SCORE_RULE else {}
        return schema.config_hash({"filter": self.name, **self.score, **rule})

    @property
    def config(self) -> dict:
        return {**self.score, **self.threshold, "score_hash": self.score_hash}

    @property
    def config_hash(self) -> str:
        return schema.config_hash({"filter": self.name, **self.config})


def make_configs(filters: list[str] | None = None, thresholds: dict | None = None,
                 params: dict | None = None) -> dict[str, FilterConfig]:
    """FilterConfig per filter; `thresholds`/`params` map "filter.param" (or "filter" for a filter's only
    threshold) to a value. Unknown names fail loudly."""
    names = list(filters or TEXT_FILTERS)
    for n in names:
        if n not in DEFAULTS:
            raise InputError(f"unknown filter {n!r}", f"filters are {', '.join(ALL_FILTERS)}", "pick from those")
    cfgs = {n: FilterConfig(n, dict(DEFAULTS[n]["score"]), dict(DEFAULTS[n]["threshold"])) for n in names}
    for kind, given in (("threshold", thresholds or {}), ("score", params or {})):
        for key, value in given.items():
            f, _, p = key.partition(".")
            if f not in DEFAULTS:
                raise InputError(f"unknown filter {f!r} in {key}={value}", f"filters are {', '.join(ALL_FILTERS)}",
                                 "write it as filter.param=value, e.g. length.max_words=300")
            slot = DEFAULTS[f][kind]
            if not p:
                if len(slot) != 1:
                    raise InputError(f"{key}={value} is ambiguous", f"{f} has {kind}s {sorted(slot) or 'none'}",
                                     f"name one, e.g. {f}.{next(iter(slot), 'param')}={value}")
                p = next(iter(slot))
            if p not in slot:
                raise InputError(f"unknown {kind} {p!r} for filter {f}", f"{f} has {kind}s {sorted(slot) or 'none'}",
                                 "use one of those")
            if f not in cfgs:
                cfgs[f] = FilterConfig(f, dict(DEFAULTS[f]["score"]), dict(DEFAULTS[f]["threshold"]))
            cur = slot[p]
            try:
                getattr(cfgs[f], kind)[p] = type(cur)(value) if not isinstance(cur, str) else str(value)
            except ValueError:
                raise InputError(f"{key}={value} is not {'an' if type(cur) is int else 'a'} {type(cur).__name__}",
                                 f"{f}'s {kind} {p} is a number", f"e.g. {key}={cur}") from None
    if "charset" in cfgs and cfgs["charset"].score["charset"] not in CHARSETS_PY:
        raise InputError(f"unknown charset {cfgs['charset'].score['charset']!r}", f"choose {sorted(CHARSETS_PY)}",
                         "e.g. --param charset.charset=printable")
    if "ngram" in cfgs and not 1 <= cfgs["ngram"].score["n"] <= 64:
        raise InputError(f"ngram.n={cfgs['ngram'].score['n']} is not supported", "an n-gram is 1 to 64 words",
                         f"e.g. --param ngram.n={DEFAULTS['ngram']['score']['n']}")
    return cfgs


def parse_thresholds(items: list[str]) -> dict:
    """`["length.max_words=300", "ngram=0.4"]` → dict (the CLI's --threshold)."""
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k or not v:
            raise InputError(f"bad --threshold {it!r}", "expected name=value", "e.g. --threshold length.max_words=300")
        out[k.strip()] = v.strip()
    return out


# ----------------------------------------------------------------------------- pure text functions

def repetition_cut(text: str) -> tuple[str | None, int]:
    """The method's repetition cut: split on ".", keep sentences until the first one that repeats an earlier
    one (case-insensitive). Returns (cut text, k) with k the 1-based index of the first repeated sentence,
    or (None, 0) when nothing repeats."""
    parts = text.split(".")
    seen: set[str] = set()
    k = 0
    for i, p in enumerate(parts):
        key = p.strip().lower()
        if not key:
            continue
        k += 1
        if key in seen:
            return (".".join(parts[:i]).strip() + ".").strip(), k
        seen.add(key)
    return None, 0


def words(text: str) -> list[str]:
    return [w for w in text.lower().split(" ") if w]


def ngram_repeat(text: str, n: int = 3) -> float:
    """Share of the caption's word n-grams that repeat an earlier one: 0 for fresh text, → 1 for a loop."""
    w = words(text)
    if len(w) < n:
        return 0.0
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def bad_char_fraction(text: str, charset: str = "latin") -> float:
    """Matches of the charset's bad pattern (a character outside it, or a mojibake pair) per character."""
    if not text:
        return 0.0
    return len(CHARSETS_PY[charset].findall(text)) / len(text)


def score_text(text: str, finish_reason: str, cfgs: dict[str, FilterConfig]) -> dict[str, float]:
    """Scores of the per-caption text filters for one caption (the Python reference)."""
    out = {}
    if "repetition" in cfgs:
        out["repetition"] = float(repetition_cut(text)[1])
    if "ngram" in cfgs:
        out["ngram"] = ngram_repeat(text, int(cfgs["ngram"].score["n"]))
    if "length" in cfgs:
        out["length"] = float(len(words(text)))
    if "truncation" in cfgs:
        out["truncation"] = 1.0 if finish_reason == "length" else 0.0
    if "charset" in cfgs:
        out["charset"] = bad_char_fraction(text, cfgs["charset"].score["charset"])
    return out


def template_counts_py(image_ids: list[str], texts: list[str]) -> list[float]:
    """Images sharing each caption's normalized text (Python reference of the SQL group-by)."""
    norm = [t.strip().lower() for t in texts]
    per_text: dict[str, set] = {}
    for i, t in zip(image_ids, norm):
        per_text.setdefault(t, set()).add(i)
    return [float(len(per_text[t])) for t in norm]


def keep_py(name: str, score: float, threshold: dict) -> tuple[bool, str]:
    """Threshold one score (Python reference of KEEP_SQL / REASON_SQL)."""
    t = threshold
    if name == "repetition":
        return (score == 0, "" if score == 0 else f"repetition: cut at sentence {int(score)}")
    if name == "ngram":
        return (score <= t["max_repeat"], "" if score <= t["max_repeat"] else
                f"ngram: {score:.2f} of word n-grams repeat > {t['max_repeat']:.2f}")
    if name == "length":
        if score < t["min_words"]:
            return False, f"length: {int(score)} words < min {t['min_words']}"
        if score > t["max_words"]:
            return False, f"length: {int(score)} words > max {t['max_words']}"
        return True, ""
    if name == "truncation":
        return (score == 0, "" if score == 0 else "truncation: generation hit max_new_tokens")
    if name == "charset":
        return (score <= t["max_bad_fraction"], "" if score <= t["max_bad_fraction"] else
                f"charset: {score:.3f} of characters non-printable or outside the charset")
    raise InputError(f"keep_py does not handle {name}", "", "")


# ---------------------------------------------------------------------------- vectorized (SQL)

def _ngram_sql(n: int) -> str:
    # hash of the n words starting at i; distinct hashes / n-grams. Hash collisions (64-bit) are negligible.
    terms = ", ".join(f"w[i + {k}]" for k in range(n))
    return (f"CASE WHEN len(w) < {n} THEN 0.0 ELSE 1.0 - len(list_distinct("
            f"list_transform(range(1, len(w) - {n - 2}), lambda i: hash({terms}))))::DOUBLE / (len(w) - {n - 1}) END")


def _tokens(arr: pa.Array, pattern: str, trim: bool):
    """(row, token id) of the non-empty tokens of each string split on `pattern` (ids: dictionary codes)."""
    import numpy as np
    import pyarrow.compute as pc

    parts = pc.split_pattern(arr, pattern)
    flat = parts.flatten()
    if trim:
        flat = pc.utf8_trim_whitespace(flat)
    row = np.repeat(np.arange(len(arr), dtype=np.int64), pc.list_value_length(parts).to_numpy(zero_copy_only=False))
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    ids = pc.dictionary_encode(flat).indices.to_numpy()[keep].astype(np.int64)
    return row[keep], ids


def _distinct_per_row(r, c, n_rows: int, c_bits: int):
    """Distinct values of c per row r (r < 2**(63-c_bits), c < 2**c_bits), via packed (row, value) pairs:
    pandas' hash-based `duplicated` (O(n), measured 2.5x a sort here), or one sort without pandas."""
    import numpy as np

    packed = (r << c_bits) | c
    try:
        import pandas as pd
    except ImportError:
        srt = np.sort(packed)
        first = np.empty(len(srt), bool)
        first[:1] = True
        first[1:] = srt[1:] != srt[:-1]
        return np.bincount(srt[first] >> c_bits, minlength=n_rows)
    return np.bincount(packed[~pd.Series(packed).duplicated().to_numpy()] >> c_bits, minlength=n_rows)


_MIX = (0x9E3779B97F4A7C15, 0xD6E8FEB86659FD93)   # odd 64-bit constants: n-gram hash, caption salt


def _distinct_ngrams(row, ids, n: int, n_rows: int):
    """Distinct word n-grams per caption. An n-gram is a 64-bit polynomial hash of its word ids (Horner with an
    odd multiplier, wrapping mod 2**64) salted with its caption; two different n-grams share a key with
    probability ~2**-64 per pair, so the count equals the exact one (the Python reference; a test compares)."""
    import numpy as np

    L = len(ids) - n + 1
    if L <= 0:
        return np.zeros(n_rows, np.int64)
    w = ids.astype(np.uint64) + np.uint64(1)
    mult = np.uint64(_MIX[0])
    code = w[:L].copy()
    for j in range(1, n):
        code *= mult
        code += w[j:j + L]
    valid = row[:L] == row[n - 1:]             # the n words lie in one caption
    r = row[:L][valid]
    key = code[valid] ^ (r.astype(np.uint64) * np.uint64(_MIX[1]))
    try:
        import pandas as pd
        first = ~pd.Series(key).duplicated().to_numpy()
    except ImportError:
        first = np.zeros(len(key), bool)
        first[np.unique(key, return_index=True)[1]] = True
    return np.bincount(r[first], minlength=n_rows)


def text_scores(table: pa.Table, cfgs: dict[str, FilterConfig], chunk: int = 1024) -> pa.Table:
    """Per-caption text scores of `table` (caption_id, text, finish_reason), vectorized with Arrow compute +
    numpy — what run_filters uses. Columns: caption_id, rep_flag (a sentence repeats; the exact cut point is
    computed in Python for the few flagged rows) and one DOUBLE per filter in cfgs. Same values as score_text.

    How: words and sentences are split by Arrow and dictionary-encoded, so every later step is integer work;
    an n-gram is a 64-bit hash of its word ids, and "distinct per caption" is a hash pass over (caption, n-gram)
    keys. Chunked (1,024 captions) because full-column temporaries thrash the cache."""
    import numpy as np
    import pyarrow.compute as pc

    n_rows = table.num_rows
    text = pc.fill_null(table.column("text").combine_chunks() if n_rows else pa.array([], pa.string()), "")
    cols = {"caption_id": table.column("caption_id")}
    if "repetition" in cfgs:
        cols["rep_flag"] = []
    n = int(cfgs["ngram"].score["n"]) if "ngram" in cfgs else 0
    if "ngram" in cfgs:
        cols["ngram"] = []
    if "length" in cfgs:
        cols["length"] = []
    for k in range(0, n_rows, chunk):
        arr = pc.utf8_lower(text.slice(k, chunk))
        m = len(arr)
        if "ngram" in cfgs or "length" in cfgs:
            row, ids = _tokens(arr, " ", trim=False)
            nw = np.bincount(row, minlength=m)
            if "length" in cfgs:
                cols["length"].append(nw.astype(np.float64))
            if "ngram" in cfgs:
                distinct = _distinct_ngrams(row, ids, n, m)
                total = np.maximum(nw - (n - 1), 0)
                cols["ngram"].append(np.where(total > 0, 1.0 - distinct / np.maximum(total, 1), 0.0))
        if "repetition" in cfgs:
            srow, sids = _tokens(arr, ".", trim=True)
            n_sent = np.bincount(srow, minlength=m)
            cols["rep_flag"].append(_distinct_per_row(srow, sids, m, 40) < n_sent)
    out = {"caption_id": cols["caption_id"]}
    if "repetition" in cfgs:
        out["rep_flag"] = pa.array(np.concatenate(cols["rep_flag"]) if n_rows else [], pa.bool_())
    for name in ("ngram", "length"):
        if name in cols:
            out[name] = pa.array(np.concatenate(cols[name]) if n_rows else [], pa.float64())
    if "truncation" in cfgs:
        fr = pc.fill_null(table.column("finish_reason"), "")
        out["truncation"] = pc.cast(pc.equal(fr, "length"), pa.float64())
    if "charset" in cfgs:
        bad = pc.count_substring_regex(text, CHARSETS_SQL[cfgs["charset"].score["charset"]])
        ln = pc.utf8_length(text)
        out["charset"] = pc.if_else(pc.equal(ln, 0), 0.0,
                                    pc.divide(pc.cast(bad, pa.float64()), pc.cast(ln, pa.float64())))
    return pa.table(out)


def text_scores_sql(con, table: pa.Table, cfgs: dict[str, FilterConfig]) -> pa.Table:
    """The same scores as text_scores, as one DuckDB query (the SQL form; bench/bench_filters.py compares them).
    Columns: caption_id, rep_flag (a sentence repeats; the exact cut point is computed in Python for the
    few flagged rows), and one DOUBLE per filter in cfgs."""
    con.register("_scoring", table)
    cols = ["caption_id"]
    if "repetition" in cfgs:
        cols.append("len(list_distinct(s)) < len(s) AS rep_flag")
    if "ngram" in cfgs:
        cols.append(f"{_ngram_sql(int(cfgs['ngram'].score['n']))} AS ngram")
    if "length" in cfgs:
        cols.append("len(w)::DOUBLE AS length")
    if "truncation" in cfgs:
        cols.append("CASE WHEN finish_reason = 'length' THEN 1.0 ELSE 0.0 END::DOUBLE AS truncation")
    if "charset" in cfgs:
        rx = CHARSETS_SQL[cfgs["charset"].score["charset"]]
        # regexp_matches first: the extraction (slow) only runs on the rare caption that has a bad character.
        cols.append(f"CASE WHEN regexp_matches(text, '{rx}') THEN "
                    f"len(regexp_extract_all(text, '{rx}'))::DOUBLE / length(text) ELSE 0.0 END AS charset")
    q = f"""
        SELECT {', '.join(cols)} FROM (
          SELECT caption_id, coalesce(text, '') AS text, finish_reason,
                 list_filter(string_split(lower(text), ' '), lambda x: x <> '') AS w,
                 list_filter(list_transform(string_split(lower(text), '.'), lambda x: trim(x)),
                             lambda x: x <> '') AS s
          FROM _scoring)"""
    try:
        out = con.sql(q).to_arrow_table()
    finally:
        con.unregister("_scoring")
    return out


def keep_reason_sql(name: str, t: dict) -> tuple[str, str]:
    """(keep expression, reason expression) over a column `score` — the SQL form of keep_py."""
    if name == "repetition":
        return "score = 0", "CASE WHEN score = 0 THEN '' ELSE 'repetition: cut at sentence ' || CAST(score AS BIGINT) END"
    if name == "ngram":
        m = float(t["max_repeat"])
        return (f"score <= {m!r}",
                f"CASE WHEN score <= {m!r} THEN '' ELSE printf('ngram: %.2f of word n-grams repeat > %.2f', score, {m!r}) END")
    if name == "length":
        lo, hi = int(t["min_words"]), int(t["max_words"])
        return (f"score >= {lo} AND score <= {hi}",
                f"CASE WHEN score < {lo} THEN 'length: ' || CAST(score AS BIGINT) || ' words < min {lo}' "
                f"WHEN score > {hi} THEN 'length: ' || CAST(score AS BIGINT) || ' words > max {hi}' ELSE '' END")
    if name == "truncation":
        return "score = 0", "CASE WHEN score = 0 THEN '' ELSE 'truncation: generation hit max_new_tokens' END"
    if name == "charset":
        m = float(t["max_bad_fraction"])
        return (f"score <= {m!r}", f"CASE WHEN score <= {m!r} THEN '' ELSE "
                f"printf('charset: %.3f of characters non-printable or outside the charset', score) END")
    if name == "template":
        # max_count is resolved per run from the group size (see _template_limit) and stored in the config.
        k = int(t["max_count"])
        return (f"score <= {k}", f"CASE WHEN score <= {k} THEN '' ELSE "
                f"'template: same text on ' || CAST(score AS BIGINT) || ' images > max {k}' END")
    if name == "grounding":
        m = float(t["min_gain"])
        return (f"score >= {m!r}", f"CASE WHEN score >= {m!r} THEN '' ELSE "
                f"printf('grounding: image adds %.3f nats/token < %.3f', score, {m!r}) END")
    if name == "clip":
        m = float(t["min_similarity"])
        return (f"score >= {m!r}", f"CASE WHEN score >= {m!r} THEN '' ELSE "
                f"printf('clip: similarity %.3f < %.3f', score, {m!r}) END")
    raise InputError(f"unknown filter {name!r}", f"filters are {', '.join(ALL_FILTERS)}", "pick from those")


def judge(table: pa.Table, cfgs: dict[str, FilterConfig] | None = None) -> pa.Table:
    """Scores and keep flags for captions held in memory, no store: `table` has caption_id, text, finish_reason
    (and image_id, kind for the template filter). Returns caption_id, then per filter `<name>` (its score) and
    `keep_<name>` — the same scores and thresholds run_filters stores (bench/bench_filters.py and the tests judge
    the filters on a labelled set with it)."""
    import duckdb
    import pyarrow.compute as pc

    cfgs = cfgs or make_configs()
    text_cfgs = {k: v for k, v in cfgs.items() if k in ("repetition", "ngram", "length", "truncation", "charset")}
    scored = text_scores(table.select(["caption_id", "text", "finish_reason"]), text_cfgs)
    if "repetition" in text_cfgs:
        scored = _exact_repetition(scored, table)
    if "template" in cfgs:
        scored = scored.append_column("template", template_counts(table))
        _template_limit(cfgs["template"], len(pc.unique(table.column("image_id"))))
    con = duckdb.connect()
    con.register("_scored", scored)
    out = pa.table({"caption_id": scored.column("caption_id")})
    try:
        for name in [n for n in cfgs if n in scored.column_names]:
            keep, _ = keep_reason_sql(name, cfgs[name].threshold)
            k = con.sql(f'SELECT ({keep}) AS k FROM (SELECT "{name}" AS score FROM _scored)').to_arrow_table()
            out = out.append_column(name, scored.column(name)).append_column(f"keep_{name}", k.column("k"))
    finally:
        con.close()
    return out


# ------------------------------------------------------------------------------------- the run

def _now():
    return datetime.now(timezone.utc)


def _candidates(store, round: int, kind: str | None) -> pa.Table:
    con = store.connect()
    try:
        q = ("SELECT caption_id, image_id, round, kind, text, captioner, prompt_id, prompt, sampling, sample_idx, "
             "finish_reason, transform FROM captions WHERE round = $round AND kind <> 'original'")
        params = {"round": int(round)}
        if kind:
            q += " AND kind = $kind"
            params["kind"] = kind
        return con.sql(q + " ORDER BY caption_id", params=params).to_arrow_table()
    finally:
        con.close()


def _stored_scores(store, cfg: FilterConfig) -> pa.Table:
    """caption_id → score from earlier verdicts with the same score parameters (any thresholds)."""
    con = store.connect()
    try:
        return con.sql("SELECT caption_id, any_value(score) AS score FROM verdicts WHERE filter = $f "
                       "AND json_extract_string(config, '$.score_hash') = $h GROUP BY caption_id",
                       params={"f": cfg.name, "h": cfg.score_hash}).to_arrow_table()
    finally:
        con.close()


def _write_verdicts(store, con, cfg: FilterConfig, scores: pa.Table, run_id: str) -> tuple[int, dict]:
    """Threshold `scores` (caption_id, score) in SQL and append the verdict rows (one commit)."""
    keep, reason = keep_reason_sql(cfg.name, cfg.threshold)
    con.register("_scores", scores)
    try:
        t = con.sql(f"SELECT caption_id, score, ({keep}) AS keep, ({reason}) AS reason FROM _scores").to_arrow_table()
    finally:
        con.unregister("_scores")
    ch = cfg.config_hash
    # Which config is *current* per caption (latest verdict). Re-applying a config that is already current
    # writes nothing (idempotent reruns); re-applying an older config after another one (defaults → custom
    # threshold → defaults) must become current again, but its verdict_id = key(caption, filter, config_hash)
    # is taken, so that re-application gets a key salted with the run id (config_hash stays the config's).
    cur = store.connect()
    try:
        rows_now = cur.sql("SELECT caption_id, config_hash, verdict_id FROM latest_verdicts WHERE filter = $f",
                           params={"f": cfg.name}).fetchall()   # the store's acceptance rule picks "current"
        taken = {r[0] for r in cur.sql("SELECT verdict_id FROM verdicts WHERE filter = $f AND config_hash = $h",
                                       params={"f": cfg.name, "h": ch}).fetchall()}
    finally:
        cur.close()
    current = {c: h for c, h, _ in rows_now}
    cids = t.column("caption_id").to_pylist()
    todo = [i for i, c in enumerate(cids) if current.get(c) != ch]
    kept_all = t.column("keep").to_pylist()
    reasons_all = t.column("reason").to_pylist()
    rejected = Counter(r for r, k in zip(reasons_all, kept_all) if not k)
    summary = {"kept": len(cids) - sum(rejected.values()), "rejected": sum(rejected.values())}
    t = t.take(pa.array(todo, pa.int64()))
    ids = []
    for c in t.column("caption_id").to_pylist():
        vid = schema.verdict_key(c, cfg.name, ch)
        ids.append(vid if vid not in taken else schema.verdict_key(c, cfg.name, f"{ch}|{run_id}"))
    n = t.num_rows
    rows = pa.table({
        "verdict_id": ids, "caption_id": t.column("caption_id"), "filter": [cfg.name] * n,
        "score": t.column("score"), "keep": t.column("keep"), "reason": t.column("reason"),
        "config": [json.dumps(cfg.config, sort_keys=True)] * n, "config_hash": [ch] * n,
        "run_id": [run_id] * n, "created_at": pa.array([_now()] * n, schema.TS),
    })
    added = store.add_verdicts(rows) if n else 0
    return added, {**summary, "written": added}


def _template_limit(cfg: FilterConfig, n_captions: int) -> FilterConfig:
    t = cfg.threshold
    if "max_count" not in t:
        t["max_count"] = max(int(t["min_count"]), math.ceil(float(t["max_fraction"]) * n_captions))
    return cfg


def run_filters(store, round: int, filters: list[str] | None = None, thresholds: dict | None = None,
                params: dict | None = None, kind: str | None = None, model: str | None = None,
                batch_size: int = 256, device: str = "cpu", progress: bool = False) -> dict:
    """Score round `round`'s recaptions with `filters` (default: the text filters; add "grounding" for the
    model-in-the-loop score) and append one verdict per caption × filter. Returns counts per filter."""
    check_round(round)
    filters = list(filters or TEXT_FILTERS)
    cfgs = make_configs(filters, thresholds, params)
    if not _candidates(store, round, kind).num_rows:
        raise InputError(f"round {round} has no recaptions{f' of kind {kind}' if kind else ''} to filter",
                         "filters judge recaptions (round ≥ 1), and none are stored for it",
                         f"run `curator recaption --round {round} …` first, or pick a round from `curator rounds`")
    run_id = store.start_run("filter", round, {"filters": filters, "thresholds": thresholds or {},
                                               "params": params or {}, "kind": kind, "model": model})
    counts: dict = {"run_id": run_id, "filters": {}}
    try:
        con = store.connect()
        # 1. repetition cut first: it adds caption versions, which every later filter must see too.
        cand = _candidates(store, round, kind)
        if "repetition" in cfgs:
            counts["repcut_versions"] = _repcut(store, con, cand, cfgs["repetition"], run_id)
            cand = _candidates(store, round, kind)
        counts["captions"] = cand.num_rows
        text_cfgs = {k: v for k, v in cfgs.items() if k in ("repetition", "ngram", "length", "truncation", "charset")}
        fresh: dict[str, pa.Table] = {}
        need = {}
        for name, cfg in text_cfgs.items():
            stored = _stored_scores(store, cfg)
            need[name] = stored
        # Score every caption lacking a stored score for any text filter, in one vectorized pass.
        have_all = set(cand.column("caption_id").to_pylist())
        missing_ids = set()
        for name, stored in need.items():
            missing_ids |= have_all - set(stored.column("caption_id").to_pylist())
        if text_cfgs and missing_ids:
            import pyarrow.compute as pc

            sub = cand.filter(pc.is_in(cand.column("caption_id"), pa.array(sorted(missing_ids))))
            scored = text_scores(sub.select(["caption_id", "text", "finish_reason"]), text_cfgs)
            if "repetition" in text_cfgs:
                scored = _exact_repetition(scored, sub)
            fresh = {n: scored.select(["caption_id", n]).rename_columns(["caption_id", "score"]) for n in text_cfgs}
        for name, cfg in text_cfgs.items():
            counts["filters"][name] = _apply(store, con, cfg, cand, need[name], fresh.get(name), run_id)
        if "template" in cfgs:
            counts["filters"]["template"] = _template(store, con, cfgs["template"], cand, round, kind, run_id)
        if "grounding" in cfgs:
            counts["filters"]["grounding"] = _grounding(store, con, cfgs["grounding"], cand, model, batch_size,
                                                        device, run_id, progress)
        if "clip" in cfgs:
            counts["filters"]["clip"] = _clip(store, con, cfgs["clip"], cand, batch_size, device, run_id)
        con.close()
    except BaseException as e:
        store.finish_run(run_id, "failed", counts, error=str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise
    store.finish_run(run_id, "ok", counts)
    return counts


def _apply(store, con, cfg, cand, stored, fresh, run_id) -> dict:
    """Union stored and freshly computed scores for the candidates, threshold, write."""
    import pyarrow.compute as pc

    ids = cand.column("caption_id")
    parts = []
    reused = stored.filter(pc.is_in(stored.column("caption_id"), ids)) if stored.num_rows else stored
    parts.append(reused.select(["caption_id", "score"]).cast(pa.schema([("caption_id", pa.string()), ("score", pa.float64())])))
    computed = 0
    if fresh is not None and fresh.num_rows:
        have = set(reused.column("caption_id").to_pylist())
        f = fresh.filter(pc.invert(pc.is_in(fresh.column("caption_id"), pa.array(sorted(have), pa.string()))))
        computed = f.num_rows
        parts.append(f.cast(pa.schema([("caption_id", pa.string()), ("score", pa.float64())])))
    scores = pa.concat_tables(parts)
    _, c = _write_verdicts(store, con, cfg, scores, run_id)
    return {**c, "computed": computed, "reused": reused.num_rows, "config_hash": cfg.config_hash}


def _exact_repetition(scored: pa.Table, sub: pa.Table) -> pa.Table:
    """Replace rep_flag by the exact cut index k (Python, only on flagged rows)."""
    flags = scored.column("rep_flag").to_pylist()
    texts = dict(zip(sub.column("caption_id").to_pylist(), sub.column("text").to_pylist()))
    ks = [float(repetition_cut(texts[c])[1]) if f else 0.0
          for c, f in zip(scored.column("caption_id").to_pylist(), flags)]
    return scored.drop_columns(["rep_flag"]).append_column("repetition", pa.array(ks, pa.float64()))


def _repcut(store, con, cand: pa.Table, cfg: FilterConfig, run_id: str) -> int:
    """Write the repetition-cut version of every raw caption that repeats a sentence (one commit)."""
    raw = cand.filter(pa.compute.equal(cand.column("transform"), ""))
    if not raw.num_rows:
        return 0
    flagged = text_scores(raw.select(["caption_id", "text", "finish_reason"]), {"repetition": cfg})
    flag = dict(zip(flagged.column("caption_id").to_pylist(), flagged.column("rep_flag").to_pylist()))
    rows = []
    for r in raw.to_pylist():
        if not flag.get(r["caption_id"]):
            continue
        cut, k = repetition_cut(r["text"])
        if cut is None:
            continue
        rows.append({**{c: r[c] for c in ("image_id", "round", "kind", "captioner", "prompt_id", "prompt",
                                            "sampling", "sample_idx")},
                     "caption_id": schema.caption_key(r["image_id"], r["round"], r["kind"], r["captioner"],
                                                      r["prompt_id"], r["sample_idx"], "repcut", r["caption_id"]),
                     "text": cut, "finish_reason": "derived", "n_tokens": None,
                     "parent_caption_id": r["caption_id"], "transform": "repcut", "run_id": run_id,
                     "created_at": _now()})
    return store.add_captions(rows, run_id=run_id) if rows else 0


def template_counts(table: pa.Table) -> pa.Array:
    """Per caption: how many distinct images carry the same normalized text (lower, trimmed) within its kind.
    The SQL form is `count(DISTINCT image_id) … GROUP BY kind, lower(trim(text))` joined back; this Arrow +
    numpy form (dictionary codes, packed pairs) is several times faster on one core (bench_filters.py)."""
    import numpy as np
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return pa.array([], pa.float64())
    norm = pc.binary_join_element_wise(pc.fill_null(table.column("kind"), ""),
                                       pc.utf8_lower(pc.utf8_trim_whitespace(pc.fill_null(table.column("text"), ""))),
                                       "\x00")
    t = pc.dictionary_encode(norm).combine_chunks().indices.to_numpy().astype(np.int64)
    i = pc.dictionary_encode(table.column("image_id")).combine_chunks().indices.to_numpy().astype(np.int64)
    n_img = _distinct_per_row(t, i, int(t.max()) + 1, max(1, int(i.max()).bit_length()))
    return pa.array(n_img[t].astype(np.float64), pa.float64())


def _template(store, con, cfg, cand, round, kind, run_id) -> dict:
    """Template collapse: images sharing one normalized text within (round, kind)."""
    import pyarrow.compute as pc

    stored = _stored_scores(store, cfg)
    counts = pa.table({"caption_id": cand.column("caption_id"), "score": template_counts(cand)})
    _template_limit(cfg, len(pc.unique(cand.column("image_id"))))
    return _apply(store, con, cfg, cand, stored, counts, run_id)


def _resolve_checkpoints(store, captioners: list[str], model: str | None) -> dict[str, str]:
    """captioner hash → checkpoint dir: --model (if its hash matches) or the models table's path."""
    out = {}
    if model:
        from vila2_model.checkpoint import content_hash

        out[content_hash(model)] = model
    con = store.connect()
    try:
        for mid, path in con.sql("SELECT model_id, path FROM models").fetchall():
            out.setdefault(mid, path)
    finally:
        con.close()
    return {c: out[c] for c in captioners if c in out}


def _grounding(store, con, cfg, cand, model, batch_size, device, run_id, progress) -> dict:
    """Mean log-likelihood of the caption under its own captioner given the image minus given a blank image.
    Captions that read the same with or without the image (gain ≤ min_gain) ignore it."""
    import pyarrow.compute as pc
    from PIL import Image

    stored = _stored_scores(store, cfg)
    have = set(stored.column("caption_id").to_pylist())
    todo = cand.filter(pc.invert(pc.is_in(cand.column("caption_id"), pa.array(sorted(have), pa.string()))))
    ckpts = _resolve_checkpoints(store, sorted(set(todo.column("captioner").to_pylist())), model)
    skipped = Counter()
    computed = 0
    written = 0
    out = {"kept": 0, "rejected": 0}
    # Write the reused scores first (re-thresholding needs no model).
    if stored.num_rows:
        c = _apply(store, con, cfg, cand, stored, None, run_id)
        out = {"kept": c["kept"], "rejected": c["rejected"]}
        written += c["written"]
    from tqdm.auto import tqdm

    from curator.engines.work import decode_resize, model_input_size
    from vila2_model.generate import Generator

    for captioner in sorted(set(todo.column("captioner").to_pylist())):
        sub = todo.filter(pc.equal(todo.column("captioner"), captioner))
        if captioner not in ckpts:
            skipped[f"no checkpoint for captioner {captioner[:12]}"] += sub.num_rows
            continue
        gen = Generator(ckpts[captioner], device=device)
        size, max_pixels = model_input_size(ckpts[captioner])   # the same resize recaption applied
        rows = sub.to_pylist()
        bar = tqdm(total=len(rows), desc=f"grounding ({captioner[:8]})", unit="caption", leave=False,
                   disable=None if progress else True)   # an ETA on a terminal
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            data = store.image_bytes([r["image_id"] for r in chunk])
            images = [decode_resize(data[r["image_id"]], size, max_pixels) for r in chunk]
            blanks = [Image.new("RGB", im.size, (128, 128, 128)) for im in images]
            prompts = [r["prompt"] for r in chunk]
            texts = [r["text"] for r in chunk]
            with_img = gen.loglikelihood(images, prompts, texts, batch_size=batch_size)
            blank = gen.loglikelihood(blanks, prompts, texts, batch_size=batch_size)
            score = [a - b if not (math.isnan(a) or math.isnan(b)) else 0.0 for a, b in zip(with_img, blank)]
            scores = pa.table({"caption_id": [r["caption_id"] for r in chunk], "score": pa.array(score, pa.float64())})
            _, c = _write_verdicts(store, con, cfg, scores, run_id)   # one commit per batch: resumable
            computed += len(chunk)
            written += c["written"]
            out["kept"] += c["kept"]
            out["rejected"] += c["rejected"]
            bar.update(len(chunk))
        bar.close()
    return {**out, "written": written, "computed": computed, "reused": stored.num_rows,
            "skipped": dict(skipped), "config_hash": cfg.config_hash}


def _clip(store, con, cfg, cand, batch_size, device, run_id) -> dict:
    """Optional image–text similarity with open_clip and user-supplied local weights (off by default)."""
    from curator.errors import require

    open_clip = require("open_clip", "clip", "the clip filter")
    import torch

    name, weights = cfg.score["model"], cfg.score["weights"]
    if not name or not weights:
        raise InputError("the clip filter needs a model name and local weights",
                         "no weights are downloaded by this project",
                         "pass --param clip.model=ViT-B-32 --param clip.weights=/path/to/open_clip_model.safetensors")
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, device=device)
    tokenizer = open_clip.get_tokenizer(name)
    stored = _stored_scores(store, cfg)
    rows = cand.to_pylist()
    scores = []
    for s in range(0, len(rows), batch_size):
        chunk = rows[s:s + batch_size]
        imgs = store.load_images([r["image_id"] for r in chunk])
        with torch.no_grad():
            im = model.encode_image(torch.stack([preprocess(imgs[r["image_id"]]) for r in chunk]).to(device))
            tx = model.encode_text(tokenizer([r["text"] for r in chunk]).to(device))
            sim = torch.nn.functional.cosine_similarity(im, tx).tolist()
        scores += list(zip([r["caption_id"] for r in chunk], sim))
    fresh = pa.table({"caption_id": [c for c, _ in scores], "score": pa.array([s for _, s in scores], pa.float64())})
    return _apply(store, con, cfg, cand, stored, fresh, run_id)


# ----------------------------------------------------------------------------------- reporting

def filter_report(store, round: int, kind: str | None = None) -> dict:
    """Counts by filter and reason over the latest verdict per (caption, filter), plus accepted captions."""
    con = store.connect()
    params = {"round": int(round)}
    kw = ""
    if kind:
        kw = " AND c.kind = $kind"
        params["kind"] = kind
    latest = f"""
        WITH v AS (          -- latest verdict per caption x filter: the store's acceptance rule (a view)
          SELECT v.* FROM latest_verdicts v JOIN captions c USING (caption_id)
          WHERE c.round = $round AND c.kind <> 'original'{kw})"""
    try:
        by_reason = con.sql(latest + """
            SELECT filter, keep, regexp_replace(reason, '-?[0-9]+(\\.[0-9]+)?', '#', 'g') AS reason, count(*) AS n
            FROM v GROUP BY ALL ORDER BY filter, keep DESC, n DESC""", params=params).fetchall()
        totals = con.sql(latest + f"""
            SELECT count(*) AS captions,
                   count(*) FILTER (WHERE c.caption_id NOT IN (SELECT caption_id FROM rejected_captions)) AS accepted
            FROM captions c WHERE c.round = $round AND c.kind <> 'original'{kw}""", params=params).fetchall()[0]
    finally:
        con.close()
    return {"captions": totals[0], "accepted": totals[1],
            "by_reason": [{"filter": f, "keep": k, "reason": r, "n": n} for f, k, r, n in by_reason]}
