"""Render `fpi report --format html` in a real headless browser and check what it built.

Needs Chromium from the distribution (Debian: `apt-get install chromium`). Runs offline:
host resolution is disabled, so a page that needed the network would show broken parts.
Writes report.html, the DOM Chromium built (dom.html) and a full-page screenshot
(report.png) into the output folder, and fails if a table or plot is missing.

    python scripts/check_report_in_browser.py [OUT_DIR]
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fpi(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fpi", *args], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "out" / "browser-check").resolve()
    out.mkdir(parents=True, exist_ok=True)
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("no Chromium found: install it (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    fpi("classify", "fixtures/traces.jsonl", "--explain", "-o", str(out / "classified.jsonl"))
    fpi("simulate", "-n", "3000", "--seed", "5", "--profile", "push-to-talk", "-o", str(out / "baseline.jsonl"))
    fpi("report", str(out / "classified.jsonl"), "--by-component", "--by", "nlu.domain", "--by", "device.type",
        "--baseline", str(out / "baseline.jsonl"), "--format", "html", "-o", str(out / "report.html"))
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--host-resolver-rules=MAP * ~NOTFOUND", f"file://{out / 'report.html'}"]
    dom = subprocess.run([*common[:-1], "--dump-dom", common[-1]], check=True, capture_output=True, text=True).stdout
    (out / "dom.html").write_text(dom, encoding="utf-8")
    subprocess.run([*common[:-1], "--window-size=1440,7000", f"--screenshot={out / 'report.png'}", common[-1]],
                   check=True, capture_output=True)
    version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip()
    found = {"tables": len(re.findall(r"<table", dom)), "plots (svg)": len(re.findall(r"<svg", dom)),
             "plot marks (path)": len(re.findall(r"<path", dom))}
    expected = {"tables": 6, "plots (svg)": 5}  # components, 2 slices, day, baseline, confusion; 5 plots
    print(f"{version}: {', '.join(f'{k} {v}' for k, v in found.items())}; screenshot {out / 'report.png'}")
    missing = [k for k, v in expected.items() if found[k] != v]
    if missing or found["plot marks (path)"] < 50:
        print(f"unexpected page: {missing or 'plots have no marks'} (expected {expected})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
