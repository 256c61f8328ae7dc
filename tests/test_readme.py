"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pgactors.embedded import EmbeddedServer

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.slow
def test_readme_examples_run(tmp_path: Path) -> None:
    env = {**os.environ, "PGACTORS_DATA_DIR": str(tmp_path / "data")}
    try:
        for block in BLOCKS:
            result = subprocess.run(
                [sys.executable, "-c", block],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, f"{block}\n{result.stderr}"
    finally:
        EmbeddedServer(tmp_path / "data").stop()
