"""Just enough of a PNG decoder to look at a screenshot's pixels (8-bit RGB
or RGBA, non-interlaced: what Chromium writes) without an imaging library."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB triples as bytes)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat = 8, b""
    width = height = depth = ctype = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        prev = line
        rgb = bytes(line) if bpp == 3 else bytes(v for k, v in enumerate(line) if k % 4 != 3)
        rows.append(rgb)
    return width, height, rows


def colour_counts(rows: list[bytes]) -> dict[tuple[int, int, int], int]:
    counts: dict[tuple[int, int, int], int] = {}
    for row in rows:
        for i in range(0, len(row), 3):
            key = (row[i], row[i + 1], row[i + 2])
            counts[key] = counts.get(key, 0) + 1
    return counts


def find_chromium() -> str | None:
    """A headless-capable Chromium on PATH, or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


NO_BROWSER = ("chromium is not installed (CI installs it in .ci/run; locally: "
              "apt-get install chromium)")


def browser_or_skip() -> str:
    """The browser, or skip the test with the reason -- unless the run
    requires one (``MMEMU_REQUIRE_BROWSER=1``, set by .ci/run once a browser
    is installed), where a missing browser is a failure."""
    import os

    import pytest

    found = find_chromium()
    if found is None:
        if os.environ.get("MMEMU_REQUIRE_BROWSER") == "1":
            pytest.fail("MMEMU_REQUIRE_BROWSER=1 but no chromium on PATH: " + NO_BROWSER)
        pytest.skip(NO_BROWSER)
    return found


def screenshot(browser: str, url: str, png: Path, *, size: tuple[int, int],
               profile: Path) -> str:
    """Render ``url`` headless into ``png``; Chromium's stderr (for asserts)."""
    import subprocess

    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={size[0]},{size[1]}",
         url],
        capture_output=True, text=True, timeout=120)
    return f"exit {proc.returncode}: {proc.stderr[-2000:]}"
