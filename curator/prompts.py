"""Recaption prompts and specialist question pools, read from prompts.yaml (prompts are data).

A prompt *set* (e.g. `vila2` = long-v1..v3) is what recaption takes; each image draws one prompt of
the set from a hash of (seed, image_id). A hash rather than a shared RNG stream so the draw does not
depend on which images a run, a shard or a resumed run happens to process: the same image always
gets the same prompt, which is what makes the caption key (and so exactly-once resume) stable.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from curator.errors import InputError

DEFAULT_PATH = Path(__file__).with_name("prompts.yaml")


@dataclass(frozen=True)
class Prompt:
    id: str      # key in prompts.yaml; stored as captions.prompt_id
    text: str    # sent verbatim inside the model's chat template; stored as captions.prompt


@dataclass(frozen=True)
class PromptBook:
    prompts: dict[str, str]
    sets: dict[str, list[str]]
    pools: dict[str, list[str]]
    path: str

    def prompt_set(self, name: str) -> list[Prompt]:
        """The prompts of set `name`; a single prompt id is accepted as a one-prompt set."""
        if name in self.sets:
            ids = self.sets[name]
        elif name in self.prompts:
            ids = [name]
        else:
            raise InputError(f"unknown prompt set {name!r}",
                             f"{self.path} defines sets {sorted(self.sets)} and prompts {sorted(self.prompts)}",
                             "run `curator prompts` to list them, or add the set to the YAML file")
        return [Prompt(i, self.prompts[i]) for i in ids]

    def draw(self, name: str, image_id: str, seed: int = 0) -> Prompt:
        """The prompt image `image_id` gets from set `name`: uniform over the set, stable across runs."""
        ps = self.prompt_set(name)
        if len(ps) == 1:
            return ps[0]
        h = int.from_bytes(hashlib.sha256(f"{seed}|{image_id}".encode()).digest()[:8], "big")
        return ps[h % len(ps)]

    def question_pool(self, kind: str) -> list[str]:
        if kind not in self.pools:
            raise InputError(f"no question pool for specialist {kind!r}",
                             f"{self.path} has pools for {sorted(self.pools)}",
                             "add a `question_pools:` entry for it in the prompts YAML")
        return list(self.pools[kind])


def load_prompts(path: str | Path | None = None) -> PromptBook:
    """Parse and validate a prompts YAML (default: the packaged curator/prompts.yaml)."""
    return _load(str(path or DEFAULT_PATH))


@lru_cache(maxsize=8)
def _load(path: str) -> PromptBook:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"prompts file {path} not found", "", "pass an existing YAML file") from None
    except yaml.YAMLError as e:
        raise InputError(f"prompts file {path} is not valid YAML", str(e).splitlines()[0],
                         "fix the YAML syntax") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), dict):
        raise InputError(f"prompts file {path} has no `prompts:` mapping", "a prompts file maps prompt ids to texts",
                         "see curator/prompts.yaml for the layout")
    unknown = set(data) - {"prompts", "sets", "question_pools"}
    if unknown:
        raise InputError(f"prompts file {path} has unknown keys {sorted(unknown)}", "",
                         "use only prompts, sets, question_pools")
    prompts = {str(k): str(v) for k, v in data["prompts"].items()}
    sets = {str(k): [str(i) for i in v] for k, v in (data.get("sets") or {}).items()}
    for name, ids in sets.items():
        missing = [i for i in ids if i not in prompts]
        if missing or not ids:
            raise InputError(f"prompt set {name!r} in {path} names unknown prompts {missing}", "",
                             "define them under `prompts:`")
    pools = {str(k): [str(q) for q in v] for k, v in (data.get("question_pools") or {}).items()}
    return PromptBook(prompts, sets, pools, path)


def question_pool(kind: str, path: str | Path | None = None) -> list[str]:
    """Questions the specialist-qa build draws from for specialist `kind` (spatial, ocr, grounding, ...)."""
    return load_prompts(path).question_pool(kind)
