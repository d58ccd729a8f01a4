"""Model shapes as data (presets/*.json): micro (tests), tiny (CPU default), small, and real-size GPU shapes.
Training recipes live beside them as presets/*.yaml (keys = train_vlm's arguments)."""
from __future__ import annotations

import json
from pathlib import Path

from vila2_model.errors import ModelError

PRESET_DIR = Path(__file__).parent


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str | dict) -> dict:
    """A preset by name, or a path to a JSON file of the same shape, or an already-loaded dict."""
    if isinstance(name, dict):
        return dict(name)
    path = Path(name)
    if not (path.suffix == ".json" and path.is_file()):
        path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise ModelError(f"unknown model preset {name!r}", f"no {path.name} among the presets",
                         f"choose one of {', '.join(list_presets())} or pass a path to a preset .json")
    preset = json.loads(path.read_text())
    preset.setdefault("name", path.stem)
    return preset


def list_recipes() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
