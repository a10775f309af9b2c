"""Copy generated reports into README.md, so that no number in it is typed in.

README.md marks each embedded block with

    <!-- embed: PATH[#HEADING] -->
    ...generated text...
    <!-- /embed -->

PATH is a Markdown file of the repository (written by `python -m bench.report` or
`lstm-ext reproduce`); #HEADING takes only that `## ` section of it. Headings inside an embedded block
are demoted one level. Run `python scripts/embed_reports.py` after regenerating a report;
`python scripts/embed_reports.py --check` fails when README.md is out of date (tests/test_readme.py).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- embed: (?P<src>[^ #]+)(?:#(?P<heading>[^>]+?))? -->\n)(?P<body>.*?)(<!-- /embed -->)", re.S)


def section(text: str, heading: str | None) -> str:
    if heading is None:
        lines = text.splitlines()
        if lines and lines[0].startswith("# "):  # the file's own title: the README has its own
            lines = lines[1:]
        return "\n".join(lines).strip() + "\n"
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if match is None:
        raise SystemExit(f"embed_reports: no '## {heading}' section")
    return match.group(1).strip() + "\n"


def demote(text: str) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)


def relink(text: str, src: Path) -> str:
    """Relative links and images of the embedded file, rewritten relative to the README."""
    base = src.parent.relative_to(ROOT)

    def fix(m):
        target = m.group(2)
        if re.match(r"^[a-z]+:|^/|^#", target):
            return m.group(0)
        return f"{m.group(1)}({(base / target).as_posix()})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)]+)\)", fix, text)


def render(readme: str) -> str:
    def replace(m):
        src = ROOT / m.group("src")
        if not src.exists():
            raise SystemExit(f"embed_reports: {m.group('src')} does not exist")
        body = relink(demote(section(src.read_text(), m.group("heading"))), src)
        return m.group(1) + body + m.group(5)

    return BLOCK.sub(replace, readme)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is not up to date")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    old = path.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md is out of date: run python scripts/embed_reports.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
