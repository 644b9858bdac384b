"""``clevr-remv browse``: the site, opened from disk (file://) in a real headless Chromium
(Debian's ``chromium``, driven by Playwright).  No Chromium is a failure, not a skip: install
it with ``apt-get install chromium`` (``.ci/run`` does).

Set ``CLEVR_REMV_SCREENSHOT=PATH`` to keep the screenshot (docs/images/browse.png comes from it).
"""

import io
import os
import shutil

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

pytestmark = pytest.mark.render


def chromium_path() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.fail("no Chromium: install Debian's 'chromium' (apt-get install chromium) or set CHROMIUM=PATH; "
                "the browse test needs a real browser")


def _stage(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator("#stage").screenshot())).convert("RGB"), np.int16)


def test_browse_site_in_headless_chromium(generated, tmp_path):
    from playwright.sync_api import sync_playwright

    site = tmp_path / "site"
    r = run_cli("browse", generated, "--out", site)
    assert r.returncode == 0, r.stderr
    assert (site / "index.html").exists() and (site / "browse.js").exists()
    assert len(list((site / "data").glob("scene-*.js"))) == 6
    assert len(list((site / "img" / "4").glob("*.webp"))) == 9  # every view of the 3x3 grid
    html = (site / "index.html").read_text() + (site / "browse.js").read_text()
    assert "http://" not in html and "https://" not in html  # nothing from the network

    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda q: problems.append(f"request failed: {q.url}"))
        page.goto((site / "index.html").as_uri() + "#scene=4")
        page.wait_for_selector("#expr-0")
        assert page.locator("#scene-list li").count() == 6
        assert "scene 4" in page.inner_text("#scene-title")
        page.wait_for_function("document.getElementById('photo').complete")
        before = _stage(page)

        # Click an expression: its target is highlighted over the photo.
        target = int(page.evaluate("CLEVR_REMV.state.scene.expressions[0].object"))
        page.click("#expr-0")
        page.wait_for_function(f"document.getElementById('overlay').dataset.layers === 'target-{target}'")
        after = _stage(page)
        assert np.abs(after - before).mean() > 5, "the overlay changes what is shown"
        assert page.locator("#expr-0.selected").count() == 1
        assert page.locator("#navigator button.valid").count() + page.locator("#navigator button.not-valid").count() == 9

        # Move to another view with the keyboard: the photo and the overlay follow.
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowUp")
        page.wait_for_function("document.getElementById('overlay').dataset.view === '0,0'")
        assert page.get_attribute("#photo", "src").endswith("img/4/0-0.webp")
        page.wait_for_function("document.getElementById('photo').complete")
        moved = _stage(page)
        assert np.abs(moved - after).mean() > 0.5, "another view shows another picture"
        assert page.inner_text("#view-label") == "view (0,0)"

        # Each object shows two labelled squares: its own colour (from the record) and its
        # colour in the masks overlay.
        data = page.evaluate("CLEVR_REMV.state.scene")
        for k, o in enumerate(data["objects"]):
            own = page.eval_on_selector(f"#object-{k} .object-colour", "e => getComputedStyle(e).backgroundColor")
            mask = page.eval_on_selector(f"#object-{k} .mask-colour", "e => getComputedStyle(e).backgroundColor")
            assert own == "rgb({}, {}, {})".format(*data["object_colors"][k])
            assert mask == "rgb({}, {}, {})".format(*data["colors"][k])
            assert page.get_attribute(f"#object-{k} .object-colour", "title") == "object colour"
        assert "mask colour" in page.inner_text("#expressions-box h2:nth-of-type(2)")

        # An expression with an anchor: the anchor is outlined (cyan) over the target layer.
        with_anchor = page.evaluate("CLEVR_REMV.state.scene.expressions.findIndex(e => e.anchor !== null)")
        assert with_anchor >= 0, "scene 4 of the test run has expressions with an anchor"
        e = data["expressions"][with_anchor]
        plain = _stage(page)
        page.click(f"#expr-{with_anchor}")
        page.wait_for_function("document.getElementById('overlay').dataset.layers === "
                               f"'target-{e['object']} anchor-{e['anchor']}'")
        cyan = _stage(page)
        cyan = (cyan[..., 0] < 80) & (cyan[..., 1] > 170) & (cyan[..., 2] > 200)
        assert cyan.sum() > 0 and not ((plain[..., 0] < 80) & (plain[..., 1] > 170) & (plain[..., 2] > 200)).any()
        page.click("#expr-0")

        # Masks on: both layers are drawn; another scene from the list loads.
        page.check("#masks")
        page.wait_for_function(f"document.getElementById('overlay').dataset.layers === 'masks target-{target}'")
        shot = tmp_path / "browse.png"
        page.screenshot(path=str(shot))
        page.click("#scene-link-0")
        page.wait_for_function("document.getElementById('scene-title').textContent.startsWith('scene 0 ')")
        browser.close()
    assert problems == []
    assert Image.open(shot).size == (1100, 760)
    keep = os.environ.get("CLEVR_REMV_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_browse_replaces_its_own_site(generated, tmp_path):
    site = tmp_path / "site"
    assert run_cli("browse", generated, "--out", site, "--scenes", "0-1").returncode == 0
    r = run_cli("browse", generated, "--out", site, "--scenes", "5")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (site / "data").iterdir()) == ["index.js", "scene-5.js"]
    assert sorted(p.name for p in (site / "img").iterdir()) == ["5"]
    assert not (site / ".partial").exists()
