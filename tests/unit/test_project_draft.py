"""Workspaces drafted from a project folder's own files (aienv create NAME --from DIR
on a folder without a workspace.yaml): each kind of file, what it becomes, and a
folder that says nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from aienv.capture.draft import default_name
from aienv.capture.install import manifest_text
from aienv.capture.project import NOTES, draft_project
from aienv.capture.project_python import conda_requirement
from aienv.errors import WorkspaceError
from aienv.workspace.manifest import parse_manifest


def draft(folder: Path, files: dict[str, str]) -> tuple[dict[str, Any], Any]:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    d = draft_project(folder, "proj", "host")
    parse_manifest(yaml.safe_load(manifest_text(d)))  # always a valid workspace.yaml
    return d.manifest, d


def test_requirements_and_an_app_file_make_a_venv_app_on_the_node_port(tmp_path: Path) -> None:
    readme = "# Proj\n\nA small service that answers questions.\n"
    files = {"requirements.txt": "# deps\nnumpy==2.0\n\n", "app.py": "", "README.md": readme}
    m, d = draft(tmp_path, files)
    (env,) = m["environments"]
    assert env["runtime"] == "venv" and env["options"]["requirements"] == "requirements.txt"
    assert env["options"]["command"] == ["env", "PORT={port.http}", "python", "app.py"]
    assert env["endpoints"] == [{"name": "http", "port": 8000, "path": "/"}]
    assert m["description"] == "A small service that answers questions."
    assert m["languages"] == ["python"] and "requirements.txt: 1 requirement(s)" in d.captured
    assert "listen on the port in PORT" in d.files[NOTES]


@pytest.mark.parametrize(
    ("requirement", "entry", "command"),
    [
        ("streamlit", "app.py", ["streamlit", "run", "app.py", "--server.port={port.http}",
                                 "--server.address=0.0.0.0", "--server.headless=true"]),
        ("fastapi\nuvicorn", "main.py", ["uvicorn", "main:app", "--host=0.0.0.0",
                                         "--port={port.http}"]),
        ("Flask>=3", "app.py", ["flask", "--app", "app", "run", "--host=0.0.0.0",
                                "--port={port.http}"]),
        ("django", "manage.py", ["python", "manage.py", "runserver", "0.0.0.0:{port.http}"]),
        ("gradio", "app.py", ["env", "GRADIO_SERVER_NAME=0.0.0.0", "GRADIO_SERVER_PORT={port.http}",
                              "python", "app.py"]),
    ],
)  # fmt: skip
def test_a_framework_starts_its_own_way(
    tmp_path: Path, requirement: str, entry: str, command: list[str]
) -> None:
    m, _ = draft(tmp_path, {"requirements.txt": requirement, entry: ""})
    assert m["environments"][0]["options"]["command"] == command


def test_notebooks_get_jupyterlab_logged_in_with_the_projects_requirements(tmp_path: Path) -> None:
    m, d = draft(tmp_path, {"pyproject.toml": '[project]\nname="p"\ndependencies=["pandas>=2"]\n',
                            "notebooks/explore.ipynb": "{}"})  # fmt: skip
    (lab,) = m["environments"]
    assert lab["name"] == "lab" and lab["endpoints"][0]["auth"]["token"] == "JUPYTER_TOKEN"
    assert lab["options"]["requirements"] == "requirements-lab.txt"
    assert d.files["requirements-lab.txt"].splitlines()[1:] == ["pandas>=2", "jupyterlab>=4"]
    assert m["tools"] == ["jupyterlab"]


def test_a_conda_environment_is_installed_by_pip_and_says_so(tmp_path: Path) -> None:
    env_yml = "dependencies:\n  - python=3.11\n  - numpy=1.26\n  - pip\n  - pip:\n    - requests\n"
    m, d = draft(tmp_path, {"environment.yml": env_yml, "server.py": ""})
    assert d.files["requirements-aienv.txt"].splitlines()[1:] == ["requests", "numpy==1.26.*"]
    assert m["environments"][0]["options"]["requirements"] == "requirements-aienv.txt"
    assert any("installed by pip under their PyPI names (numpy==1.26.*)" in t for t in d.notes)
    assert any("asks for python=3.11" in t for t in d.notes)


def test_conda_only_packages_are_left_out_and_named(tmp_path: Path) -> None:
    env_yml = ("dependencies:\n  - nvidia::cudatoolkit=11.8\n  - r-ggplot2\n  - pytorch=2.3\n"
               "  - flask\n")  # fmt: skip
    m, d = draft(tmp_path, {"environment.yaml": env_yml, "app.py": ""})
    assert d.files["requirements-aienv.txt"].splitlines()[1:] == ["torch==2.3.*", "flask"]
    assert m["environments"][0]["options"]["command"][0] == "flask"
    (left,) = [t for t in d.notes if "conda-only" in t]
    assert "nvidia::cudatoolkit=11.8, r-ggplot2" in left


@pytest.mark.parametrize(
    ("spec", "requirement"),
    [
        ("numpy", "numpy"),
        ("numpy=1.26", "numpy==1.26.*"),
        ("numpy=1.26.*", "numpy==1.26.*"),
        ("numpy==1.26.4", "numpy==1.26.4"),
        ("numpy=1.26.4=py311h64a7726_0", "numpy==1.26.4.*"),
        ("numpy 1.26.*", "numpy==1.26.*"),
        ("conda-forge::numpy >=1.20,<2", "numpy>=1.20,<2"),
        ("PyTorch", "torch"),
    ],
)
def test_a_conda_match_spec_becomes_a_pip_requirement(spec: str, requirement: str) -> None:
    assert conda_requirement(spec)[1] == requirement


def test_pyproject_dependencies_and_a_poetry_project_that_has_none_there(tmp_path: Path) -> None:
    pyproject = '[project]\nname="p"\ndependencies=["jinja2>=3"]\n'
    m, d = draft(tmp_path, {"pyproject.toml": pyproject, "main.py": ""})
    assert d.files["requirements-aienv.txt"].splitlines()[1:] == ["jinja2>=3"]
    assert m["environments"][0]["options"]["command"] == ["env", "PORT={port.http}", "python",
                                                          "main.py"]  # fmt: skip
    poetry = '[tool.poetry]\nname="p"\n[tool.poetry.dependencies]\nflask="^3"\n'
    (tmp_path / "pyproject.toml").write_text(poetry)
    _, d = draft(tmp_path, {})
    assert any("Poetry's" in t for t in d.notes)


def test_a_dockerfile_is_built_on_share_with_its_exposed_ports(tmp_path: Path) -> None:
    m, d = draft(tmp_path, {"Dockerfile": "FROM busybox\nEXPOSE 8080/tcp 9090\nCMD x\n"})
    (env,) = m["environments"]
    assert env["container"] == {"image": f"aienv-draft/{default_name(tmp_path.name)}:latest",
                                "build": ".", "image_archive": "images/image.tar"}  # fmt: skip
    assert [e["port"] for e in env["endpoints"]] == [8080, 9090]
    assert len({e["name"] for e in env["endpoints"]}) == 2
    assert "images/" in d.files[".dockerignore"]  # the saved image stays out of the next build


def test_a_devcontainer_with_comments_gives_ports_env_and_host_requirements(tmp_path: Path) -> None:
    spec = """{
      // a comment, and a trailing comma below
      "build": {"dockerfile": "Dockerfile"},
      "forwardPorts": [8888],
      "containerEnv": {"MODE": "dev"},
      "hostRequirements": {"cpus": 4, "memory": "8gb", "storage": "32gb", "gpu": true},
      "postCreateCommand": "pip install -e .",
    }"""
    m, d = draft(tmp_path, {".devcontainer/devcontainer.json": spec,
                            ".devcontainer/Dockerfile": "FROM busybox\n"})  # fmt: skip
    env = m["environments"][0]
    assert env["runtime"] == "container" and env["container"]["build"] == ".devcontainer"
    assert env["container"]["env"] == {"MODE": "dev"}
    assert env["requires"] == {
        "cpus": 4,
        "memory": "8192MiB",
        "disk": "32768MiB",
        "gpu": "required",
    }
    assert env["endpoints"][0]["port"] == 8888
    assert any("postCreateCommand" in t for t in d.notes)


def test_package_json_runs_npm_start_with_port(tmp_path: Path) -> None:
    pkg = {"name": "web", "scripts": {"start": "node server.js"}}
    m, d = draft(tmp_path, {"package.json": json.dumps(pkg)})
    (env,) = m["environments"]
    assert env["runtime"] == "process"
    assert env["process"]["command"] == ["env", "PORT={port.http}", "npm", "start"]
    assert not any("node_modules" in t for t in d.notes)  # nothing to install


def test_package_json_dependencies_are_installed_by_a_setup_step(tmp_path: Path) -> None:
    pkg = {"name": "web", "main": "index.js", "dependencies": {"express": "^4"}}
    m, d = draft(tmp_path, {"package.json": json.dumps(pkg)})
    assert m["environments"][0]["process"]["command"][2:] == ["node", "index.js"]
    install = "test -d node_modules || npm install --no-audit --no-fund"
    assert m["setup"] == [{"name": "node-modules", "run": install}]
    assert any("npm install needs the npm registry on the node that clones it" in t
               for t in d.notes)  # fmt: skip
    (tmp_path / "package-lock.json").write_text("{}")
    (tmp_path / "node_modules").mkdir()
    m, d = draft(tmp_path, {})
    assert m["setup"][0]["run"] == "test -d node_modules || npm ci --no-audit --no-fund"
    assert any("node_modules is carried as it is" in t for t in d.notes)


def test_a_folder_that_says_nothing_is_refused_naming_what_would_do(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(WorkspaceError, match=r"requirements\.txt, pyproject\.toml") as caught:
        draft_project(tmp_path, "proj", "host")
    assert caught.value.code == "nothing_to_draft"


def test_broken_files_are_reported_not_raised(tmp_path: Path) -> None:
    m, d = draft(tmp_path, {"pyproject.toml": "[project", "Dockerfile": "FROM x\n",
                            "package.json": "{nope"})  # fmt: skip
    assert [e["runtime"] for e in m["environments"]] == ["container"]
    assert any("pyproject.toml is not valid TOML" in t for t in d.notes)
    assert any("package.json is not valid JSON" in t for t in d.notes)


def test_a_folder_name_unfit_for_an_image_and_odd_json_still_draft(tmp_path: Path) -> None:
    folder = tmp_path / "My Project (v2)"
    folder.mkdir()
    m, d = draft(folder, {"Dockerfile": "FROM x\nEXPOSE 80\n", ".devcontainer.json": "[1, 2]",
                          "package.json": "[]", "environment.yml": "- a list"})  # fmt: skip
    assert m["environments"][0]["container"]["image"] == "aienv-draft/my-project-v2:latest"
    assert any(".devcontainer.json is not a JSON object" in t for t in d.notes)
    assert any("package.json is not a JSON object" in t for t in d.notes)
