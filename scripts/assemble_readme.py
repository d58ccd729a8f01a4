#!/usr/bin/env python3
# Assemble README.md from docs/readme sections (lead's parts + each area's section, headings demoted one level).
import re
from pathlib import Path
R = Path(__file__).resolve().parents[1] / "docs" / "readme"
def demote(text):
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("#"):
            line = "#" + line
        out.append(line)
    t = "\n".join(out)
    t = t.replace("(../img/", "(docs/img/").replace("(../../examples/", "(examples/").replace("](world-grid.png)", "](docs/readme/world-grid.png)")
    return t
parts = [R/"_top.md", R/"_results.md", R/"_cli.md", R/"_arch.md"]
s = "\n\n".join(p.read_text().strip() for p in parts)
s += "\n\n# Details by area\n\n" + "\n\n".join(demote(( R/f"{a}.md").read_text().strip()) for a in ("store","world","model","engines","inspect"))
s += "\n\n" + (R/"_todo.md").read_text().strip() + "\n"
(Path(__file__).resolve().parents[1] / "README.md").write_text(s)
