"""The report pages as a person sees them: ``refstar restore`` of a video and an album into one
output, the output served on localhost, each page opened in headless Chromium (Playwright):
no console errors, every picture decoded, the controls work. Screenshots are written beside the
output (``$REFSTAR_SCREENSHOTS`` when set, so CI can keep them).

Needs Chromium (Debian's ``chromium``; ``.ci/run`` installs it) and the ``playwright`` package
(the test extra); without them the test is skipped, saying which is missing."""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest

from worker.cli import main
from worker.synthetic import FaceScene, degrade, write_video

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """A video (two people, its middle third degraded) and an album of one person (two soft
    photos and a sharp one, whose face is their reference and, the sharpest, is left as it is)
    restored into one output by the CLI, served over HTTP: (root folder, base URL)."""
    d = tmp_path_factory.mktemp("in")
    scene = FaceScene(persons=("t1_2", "hanks"), size=(320, 224), face_px=96)
    write_video(scene, d / "two_people.mp4", 18, degrade=set(range(6, 12)))
    album = d / "album"
    album.mkdir()
    for k in range(3):
        photo = FaceScene(persons=("t1_2",), size=(320, 256), face_px=110).render(k)
        soft = degrade(photo, seed=k, sigma=1.5, scale=2, noise=2, jpeg=70)
        cv2.imwrite(str(album / f"p{k}.jpg"), soft if k < 2 else photo)
    out = tmp_path_factory.mktemp("out")
    assert main(["restore", str(d / "two_people.mp4"), str(album), "-o", str(out), "-q",
                 "--set", "restore.crop_size=256"]) == 0
    yield from _serve(out)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Three videos and an album restored with ``--layout mirror --suffix _r``, served: (root
    folder, base URL)."""
    d = tmp_path_factory.mktemp("reels")
    for k, who in enumerate(("t1_2", "hanks", "t1_0")):
        write_video(FaceScene(persons=(who,), size=(256, 192), face_px=90, seed=k), d / f"reel{k}.mp4", 6)
    (d / "family").mkdir()
    cv2.imwrite(str(d / "family" / "p0.jpg"), FaceScene(persons=("t1_2",), size=(320, 256), face_px=110).render(0))
    out = tmp_path_factory.mktemp("mirror-out")
    inputs = [str(d / f"reel{k}.mp4") for k in range(3)] + [str(d / "family")]
    assert main(["restore", *inputs, "-o", str(out), "-q", "--set", "restore.crop_size=256",
                 "--layout", "mirror", "--suffix", "_r"]) == 0
    yield from _serve(out)


def _serve(out: Path):
    handler = functools.partial(_Quiet, directory=str(out))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _open(browser, url: str, shot: Path):
    """The page at ``url`` after load, its console errors and failed requests, and a screenshot."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="load")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    return page, problems


def _broken_images(page) -> list[str]:
    return page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                         ".map(i => i.alt || i.src.slice(0, 60))")


def _shots(out: Path) -> Path:
    return Path(os.environ.get("REFSTAR_SCREENSHOTS") or out.parent / "screenshots")


@pytest.mark.slow
def test_batch_index_lists_every_item_with_links_that_work(browser, output):
    out, base = output
    page, problems = _open(browser, f"{base}/index.html", _shots(out) / "index.png")
    assert problems == [] and _broken_images(page) == []
    assert page.locator(".item").count() == 2
    assert page.locator(".st.done").count() == 2
    # the video's two people appear as reference thumbnails
    video = page.locator(".item", has_text="two_people.mp4")
    assert video.locator(".thumbs img").count() == 2
    for link in page.locator("a").all():  # report, media and manifest of each item are there
        href = link.get_attribute("href")
        assert page.request.get(f"{base}/{href}").status == 200, href
    page.close()


@pytest.mark.slow
def test_video_report_pairs_zoom_and_frame_slider(browser, output):
    out, base = output
    (item,) = [p for p in out.iterdir() if p.name.startswith("two_people-")]
    m = json.loads((item / "manifest.json").read_text())
    page, problems = _open(browser, f"{base}/{item.name}/report.html", _shots(out) / "report-video.png")
    assert problems == [] and _broken_images(page) == []
    people = len(m["identities"])
    assert people == 2 and page.locator("h2", has_text="Person").count() == people
    assert page.locator("figure.ref").count() == sum(len(i["references"]) for i in m["identities"]) > 0
    pairs = page.locator("figure.pair")
    assert pairs.count() >= people
    first = pairs.first
    assert first.locator(".lab span").all_inner_texts() == ["before", "after"]
    assert first.locator("img").first.bounding_box()["width"] >= 200  # large enough to judge

    zoom = page.locator("#zoom")
    assert not zoom.is_visible()
    first.click()
    assert zoom.is_visible() and zoom.locator("img").count() == 2
    page.keyboard.press("Escape")
    assert not zoom.is_visible()

    frames = page.locator("figure.frame")
    assert 1 <= frames.count() <= 3
    slider = frames.first.locator("input[type=range]")
    slider.fill("20")
    assert frames.first.locator(".cmp").evaluate("c => c.style.getPropertyValue('--x')") == "20%"
    # the references say why they were chosen, in words
    assert "sharpest" in page.locator("figure.ref figcaption").first.inner_text()
    page.close()


@pytest.mark.slow
def test_album_report_shows_each_photo_whole(browser, output):
    out, base = output
    (item,) = [p for p in out.iterdir() if p.name.startswith("album-")]
    page, problems = _open(browser, f"{base}/{item.name}/report.html", _shots(out) / "report-album.png")
    assert problems == [] and _broken_images(page) == []
    captions = page.locator("figure.frame figcaption").all_inner_texts()
    assert sorted(captions) == ["p0.jpg", "p1.jpg"]  # p2's face, the reference, is left as it is
    page.close()


@pytest.mark.slow
def test_mirror_batch_keeps_names_and_its_page_links_them_all(browser, mirrored):
    out, base = mirrored
    assert {p.name for p in out.glob("*_r.mp4")} == {"reel0_r.mp4", "reel1_r.mp4", "reel2_r.mp4"}
    assert [p.name for p in (out / "family").iterdir()] == ["p0_r.jpg"]
    page, problems = _open(browser, f"{base}/index.html", _shots(out) / "index-mirror.png")
    assert problems == [] and _broken_images(page) == []
    assert page.locator(".item").count() == 4 and page.locator(".st.done").count() == 4
    hrefs = [a.get_attribute("href") for a in page.locator("a").all()]
    assert {h for h in hrefs if h.endswith(".mp4")} == {"reel0_r.mp4", "reel1_r.mp4", "reel2_r.mp4"}
    assert "family/" in hrefs and "family.refstar/report.html" in hrefs
    for href in hrefs:
        assert page.request.get(f"{base}/{href}").status == 200, href
    page.close()
