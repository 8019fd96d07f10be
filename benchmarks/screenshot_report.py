"""Render an `edgecomp export` report.html in a real headless browser and save a screenshot.

    python benchmarks/screenshot_report.py OUTDIR/report.html docs/report-screenshot.png --height 4000

The browser window is 1280 x --height pixels (default 2400, the top of the page); the blank space
below the page's end is cut off, so a tall window gives the whole page.

Uses Debian's chromium (apt-get install chromium); the page is self-contained, so the browser runs
with networking features off and a throw-away profile. The PNG is reduced to a palette image so it
stays small enough to keep in the repository. Writes benchmarks/results/screenshot_report.json with
the page size, the image count and how long the browser took.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # benchmarks/common.py, and the repo's packages
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


class _Audit(HTMLParser):
    """Counts the page's images and any resource it would fetch from elsewhere."""

    def __init__(self):
        super().__init__()
        self.images = 0
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag == "img":
            self.images += 1


def find_chromium(explicit: str | None) -> str:
    for name in ([explicit] if explicit else CHROMIUM_CANDIDATES):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("error: no chromium found: install Debian's chromium (apt-get install chromium) or pass --chromium PATH")


def screenshot(page: Path, png: Path, chromium: str, width: int, height: int, timeout_s: float = 120) -> float:
    """Run headless chromium on file://PAGE; returns the seconds it took."""
    with tempfile.TemporaryDirectory(prefix="edgecomp-chromium-") as profile:
        raw = Path(profile) / "shot.png"
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}/user", f"--screenshot={raw}",
               f"--window-size={width},{height}", page.resolve().as_uri()]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not raw.is_file():
            sys.exit(f"error: chromium failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
        shrink_png(raw, png)
    return seconds


def shrink_png(src: Path, dst: Path, colors: int = 128, margin: int = 24) -> None:
    """Cut the blank space below the page's end, then save a palette-quantized, optimized PNG
    (screenshots of flat UI colors lose nothing visible)."""
    from PIL import Image, ImageChops

    from edgecomp.io import atomic_path

    image = Image.open(src).convert("RGB")
    content = ImageChops.difference(image, Image.new("RGB", image.size, image.getpixel((0, image.height - 1))))
    box = content.getbbox()
    if box is not None:
        image = image.crop((0, 0, image.width, min(image.height, box[3] + margin)))
    image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        image.save(tmp, format="png", optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="report.html written by `edgecomp export`")
    parser.add_argument("png", type=Path, help="where to save the screenshot")
    parser.add_argument("--chromium", help="browser binary (default: chromium on PATH)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    if not args.html.is_file():
        sys.exit(f"error: {args.html} is not a file: pass the report.html of an `edgecomp export` run")
    audit = _Audit()
    audit.feed(args.html.read_text(encoding="utf-8"))
    if audit.external:
        sys.exit(f"error: the page is not self-contained: it references {audit.external[:3]}")
    chromium = find_chromium(args.chromium)
    seconds = screenshot(args.html, args.png, chromium, args.width, args.height)
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    result = {"html": str(args.html), "png": str(args.png), "html_bytes": args.html.stat().st_size,
              "png_bytes": args.png.stat().st_size, "images": audit.images, "browser": version,
              "window": [args.width, args.height], "browser_seconds": round(seconds, 2)}
    from common import write_results

    write_results("screenshot_report", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
