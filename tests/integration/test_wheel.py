"""The built wheel works away from the repository: installed names, dashboard files, scripts.

The wheel is built from a copy of the sources (nothing is written into the clone) and installed
with `--no-deps` into a fresh venv in a temp dir. That venv sees the dependencies through a
path entry to this environment's site-packages (so no download), while the repository's own
`service` and `client` folders are not importable from it: everything runs from another cwd
and `dubsim.__file__` must be inside the new venv.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

TOKEN = "wheel-test-admin-token"


class Installed:
    def __init__(self, venv: Path, wheel: Path, cwd: Path) -> None:
        self.venv = venv
        self.wheel = wheel
        self.cwd = cwd
        self.bin = venv / "bin"

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DUBSIM_URL")}
        return subprocess.run(
            args, cwd=self.cwd, env=env, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Installed:
    """Built and installed once per run: xdist workers share the run's temp root, and the
    first to get there builds while the others wait on the lock (each test only reads it)."""
    if worker_id == "master":
        return build_and_install(tmp_path_factory.mktemp("wheel"))
    root = tmp_path_factory.getbasetemp().parent
    with (root / "wheel.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        tmp, done = root / "wheel", root / "wheel.done"
        if not done.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # a build that failed part-way
            tmp.mkdir()
            build_and_install(tmp)
            done.touch()
    (wheel,) = (tmp / "dist").glob("dubsim-*.whl")
    return Installed(tmp / "venv", wheel, tmp / "elsewhere")


def build_and_install(tmp: Path) -> Installed:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("client", "service", "web"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(dist)],
        cwd=tmp,
        check=True,
        timeout=120,
    )
    (wheel,) = dist.glob("dubsim-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    venv_site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # The dependencies, from this environment; its .pth files (the editable install's finder)
    # are not processed for a plain path entry, so `dubsim` can only come from the wheel.
    (venv_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "-q", "install", "--no-deps", str(wheel)],
        cwd=tmp,
        check=True,
        timeout=120,
    )
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    return Installed(venv, wheel, cwd)


@pytest.fixture(scope="module")
def served(installed: Installed) -> Iterator[str]:
    proc = subprocess.Popen(
        [str(installed.bin / "dubsim-server"), "--port", "0", "--db", ":memory:"],
        cwd=installed.cwd,
        env={**os.environ, "ADMIN_TOKEN": TOKEN, "TRANSLATION_DELAY": "0.1", "ERROR_RATE": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket listens
        assert line.startswith("dubsim serving on http://127.0.0.1:"), line
        yield line.split()[3]
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def test_wheel_holds_only_dubsim_with_the_dashboard(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = whl.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in whl.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"dubsim"}
    for name in ("index.html", "app.js", "style.css"):
        assert f"dubsim/server/web/{name}" in names
    assert "dubsim/py.typed" in names and "dubsim/server/py.typed" in names
    core = sorted(r.split(">")[0].split("<")[0] for r in requires if "extra ==" not in r)
    assert core == ["aiohttp", "msgspec", "rich", "standardwebhooks"]  # a client stays small
    assert any(r.startswith("aiohttp-sse") and 'extra == "server"' in r for r in requires)


def test_installed_client_imports_by_its_public_name(installed: Installed) -> None:
    code = (
        "import dubsim, dubsim.server; from dubsim import AsyncClient, Client; "
        "import importlib.util as u; "
        "print(dubsim.__file__); print(dubsim.server.__file__); "
        "print(u.find_spec('client'), u.find_spec('service'))"
    )
    result = installed.run(str(installed.bin / "python"), "-c", code)
    assert result.returncode == 0, result.stderr
    client_file, server_file, stray = result.stdout.splitlines()
    assert Path(client_file).is_relative_to(installed.venv)
    assert Path(server_file).is_relative_to(installed.venv)
    assert stray == "None None"  # the repository's folders are not what got imported


def test_installed_server_serves_dashboard_and_api(installed: Installed, served: str) -> None:
    status, ctype, body = get(served + "/")
    assert status == 200 and ctype.startswith("text/html") and b"<html" in body.lower()
    status, ctype, body = get(served + "/static/app.js")
    assert status == 200 and "javascript" in ctype and body
    status, _, body = get(served + "/openapi.json")
    assert status == 200 and json.loads(body)["openapi"].startswith("3.")


def test_installed_cli_talks_to_the_installed_server(installed: Installed, served: str) -> None:
    url = served.removeprefix("http://")  # no scheme: http is assumed
    dubsim = str(installed.bin / "dubsim")
    result = installed.run(dubsim, "--url", url, "--user", "w", "submit", "--json", "--wait")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    result = installed.run(dubsim, "--url", url, "--token", TOKEN, "jobs", "--json")
    assert result.returncode == 0, result.stderr
    assert [job["user_id"] for job in json.loads(result.stdout)] == ["w"]


@pytest.mark.parametrize(
    ("script", "prog"), [("dubsim-server", "dubsim-server"), ("dubsim", "dubsim")]
)
def test_installed_scripts_say_their_own_name(installed: Installed, script: str, prog: str) -> None:
    result = installed.run(str(installed.bin / script), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {prog} ")


def test_python_dash_m_names_the_installed_package(installed: Installed) -> None:
    result = installed.run(str(installed.bin / "python"), "-m", "dubsim.server", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m dubsim.server ")
