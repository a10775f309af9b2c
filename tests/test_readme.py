"""README.md's generated blocks are current (no typed-in numbers) and its Quick start is what CI runs."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_reports_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "embed_reports.py"), "--check"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_quick_start_has_the_two_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    for tag in ("demo", "test"):
        assert f"<!-- quickstart:{tag} -->\n```bash\n" in readme
