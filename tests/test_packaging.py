"""The Dockerfile and the installed package carry everything the worker reads.

There is no Docker engine on the CI machine, so the image is never built there; these
checks keep the Dockerfile's steps honest instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_copies_every_folder_the_settings_read_by_default() -> None:
    copied = set(re.findall(r"^COPY (\S+) ", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    defaults = Settings.model_fields
    for name in ("sequences_dir", "templates_dir", "content_dir", "crm_dir"):
        folder = Path(str(defaults[name].default)).name
        assert (ROOT / folder).is_dir(), folder
        assert folder in copied, f"the Dockerfile does not COPY {folder}/ ({name})"


def test_wheel_holds_the_lua_scripts_and_the_page(tmp_path: Path) -> None:
    """The image installs with `pip install .` (no editable install): data files must be
    in the wheel, or the worker fails at start-up there and only there."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"worker/{p.relative_to(ROOT / 'worker').as_posix()}"
        for p in (ROOT / "worker").rglob("*")
        if p.is_file() and p.suffix in (".lua", ".html") and "__pycache__" not in p.parts
    }
    assert expected and expected <= names, sorted(expected - names)
