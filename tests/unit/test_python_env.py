"""What a captured Python program imports (read, never run) and its command once its
virtualenv is rebuilt elsewhere (aienv.capture.python_env)."""

from __future__ import annotations

from pathlib import Path

from aienv.capture.python_env import env_prefix, imports_in, roots, venv_command


def test_imports_are_the_third_party_top_level_modules_of_its_own_files(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "app.py").write_text(
        "import os, json\nimport numpy as np\nfrom jinja2.sandbox import X\n"
        "from . import sibling\nfrom pkg import helpers\nimport helpers2\n"
        "def f():\n    import torch.nn\n"
    )
    (tmp_path / "helpers2.py").write_text("import yaml\n")
    (tmp_path / "broken.py").write_text("def (:\n")  # not Python: skipped, not raised
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "x.py").write_text("import never_read\n")
    assert imports_in(tmp_path) == {"numpy", "jinja2", "torch", "yaml"}


def test_a_virtualenv_command_names_its_scripts_and_python(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert env_prefix(str(venv / "bin" / "python3")) == venv
    assert env_prefix("/usr/bin/python3") is None
    lab = str(venv / "bin" / "jupyter-lab")
    assert venv_command(["python3", lab, "--port={port.lab}"], venv) == (
        ["jupyter-lab", "--port={port.lab}"],
        [],
    )
    assert venv_command([lab, "--no-browser"], venv) == (["jupyter-lab", "--no-browser"], [])
    inside = str(venv / "lib" / "data.json")
    assert venv_command(["python3", "app.py", inside], venv) == (
        ["python", "app.py", inside],
        [inside],
    )
    assert roots(["python3", lab], None, ["numpy"], venv) == {
        "modules": ["numpy"],
        "scripts": ["jupyter-lab", "python3"],
    }
