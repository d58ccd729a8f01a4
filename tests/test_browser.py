"""The FiftyOne App, served on 127.0.0.1, opened in a real headless Chromium (Debian's package, driven by
selenium + chromium-driver): a sample's caption versions render next to their field names."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inspect_store import build_store, drop_datasets, fiftyone_env
from browser.chrome import caption_pairs, hide_promo, open_chromium, wait_for_text

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """`curator inspect --port P` in a subprocess (the real command), until it prints the App's URL."""
    fiftyone_env(tmp_path_factory)
    from curator.inspect import fiftyone

    fo = fiftyone()        # the subprocess inherits this environment (database dir, OpenSSL 1.1 path)
    drop_datasets(fo, ["t-browser"])
    tmp = tmp_path_factory.mktemp("browser")
    st, ids = build_store(tmp / "store")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/datasets/t-browser"
    log = tmp / "inspect.out"
    # stdout to a file, not a pipe: the mongod service the command starts inherits it and outlives the command
    with open(log, "w") as out:
        # Ctrl-C must reach it as in a terminal: a test run started in the background (nohup, `cmd &`) inherits
        # SIGINT as ignored, and Python keeps it ignored, so the child gets the default disposition back.
        proc = subprocess.Popen([str(Path(sys.executable).with_name("curator")), "--store", str(tmp / "store"),
                                 "inspect", "--name", "t-browser", "--port", str(port), "--cache-dir", str(tmp / "cache")],
                                stdout=out, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = _wait_for_line(proc, log, "FiftyOne App: ")
        assert seen[-1] == f"FiftyOne App: {url}  (Ctrl-C to stop)", "\n".join(seen)
        assert seen[0] == ("dataset t-browser: 3 added, 0 updated, 3 samples; caption fields: "
                           "r0_original, r1_self, r2_self, r2_spatial"), "\n".join(seen)
        yield {"ds": fo.load_dataset("t-browser"), "ids": ids, "base": f"http://127.0.0.1:{port}", "url": url}
    finally:
        proc.send_signal(signal.SIGINT)      # Ctrl-C: the command stops serving and exits cleanly
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("curator inspect did not stop within 120 s of Ctrl-C:\n" + log.read_text())
    assert proc.returncode == 0 and log.read_text().endswith("App stopped.\n"), log.read_text()


def _wait_for_line(proc, log: Path, prefix: str) -> list[str]:
    """Lines the command printed up to the first starting with prefix; fails if the command exits first."""
    while True:
        lines = log.read_text().splitlines()
        if any(x.startswith(prefix) for x in lines):
            return lines[:next(i for i, x in enumerate(lines) if x.startswith(prefix)) + 1]
        assert proc.poll() is None, f"curator inspect exited {proc.returncode}:\n" + "\n".join(lines)
        time.sleep(0.5)


def test_grid_lists_samples_and_caption_fields(app, tmp_path):
    driver = open_chromium(tmp_path / "chromium-profile")
    try:
        hide_promo(driver, app["base"])
        driver.get(app["url"])
        wait_for_text(driver, "3 samples")
        wait_for_text(driver, "a large red square in the center of the image.")   # tiles show the caption fields
        lines = driver.find_element("tag name", "body").text.splitlines()
        # the sidebar lists the caption fields in round order, right after the tag filters
        i = lines.index("r0_original")
        assert lines[i:i + 4] == ["r0_original", "r1_self", "r2_self", "r2_spatial"], lines
        # each grid tile prints its sample's caption versions (the dataset's active fields), in field order
        assert {"red thing stock photo" "a red square." "a large red square in the center of the image."
                "the red square is at the center.",
                "blue" "a blue square on a white background." "a small blue square at the top left and a red circle.",
                "green" "a green square with a green square next to a green square."} <= set(lines), lines
        assert driver.save_screenshot(str(tmp_path / "grid.png"))
    finally:
        driver.quit()


def test_sample_modal_shows_caption_versions(app, tmp_path):
    sample = next(s for s in app["ds"] if s["image_id"] == app["ids"]["A"])
    driver = open_chromium(tmp_path / "chromium-profile")
    try:
        hide_promo(driver, app["base"])
        driver.get(f"{app['url']}?id={sample.id}")      # opens the sample modal
        wait_for_text(driver, "the red square is at the center.")
        pairs = caption_pairs(driver)
        assert pairs["r0_original"] == "red thing stock photo"
        assert pairs["r1_self"] == "a red square."        # the derived repcut version, not the rejected raw one
        assert pairs["r2_self"] == "a large red square in the center of the image."
        assert pairs["r2_spatial"] == "the red square is at the center."
        assert pairs["image_id"] == app["ids"]["A"]
        assert "Accelerate your workflow" not in driver.find_element("tag name", "body").text
        shot = tmp_path / "app.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    from PIL import Image

    im = Image.open(shot)
    assert im.size[0] == 1400 and len(set(im.convert("L").resize((64, 64)).getdata())) > 8   # not a blank page
