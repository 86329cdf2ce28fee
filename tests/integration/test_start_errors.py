"""A start that can't succeed is one line on stderr naming the setting, exit code 2, and the
server never claims to be serving (nor prints an admin token that no server holds)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port


def start(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_naming(result: subprocess.CompletedProcess[str], setting: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no traceback, no log noise
    assert lines[0].startswith(f"dubsim: {setting}: "), lines[0]
    assert "Traceback" not in result.stderr
    assert "serving on" not in result.stdout
    assert "admin token" not in result.stdout


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_db_in_a_missing_directory_names_db(tmp_path: Path) -> None:
    db = tmp_path / "no-such-dir" / "dubsim.db"
    result = start("--db", str(db), "--port", str(free_port()))
    assert_one_line_naming(result, "DB")
    assert str(db) in result.stderr


def test_db_that_is_not_a_database_names_db(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(b"this is not an sqlite file" * 100)
    assert_one_line_naming(start("--db", str(db), "--port", str(free_port())), "DB")


def test_port_in_use_names_port(busy_port: int) -> None:
    result = start("--db", ":memory:", "--port", str(busy_port))
    assert_one_line_naming(result, "PORT")
    assert "in use" in result.stderr


def test_host_not_on_this_machine_names_host() -> None:
    # 192.0.2.0/24 is reserved for documentation: never a local address.
    result = start("--db", ":memory:", "--host", "192.0.2.1", "--port", str(free_port()))
    assert_one_line_naming(result, "HOST")


def test_bad_setting_value_names_the_variable() -> None:
    assert_one_line_naming(start("--error-rate", "7"), "ERROR_RATE")


def test_serving_line_comes_once_listening_with_the_real_port() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--db", ":memory:", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "admin token" in proc.stdout.readline()
        line = proc.stdout.readline()
        assert line.startswith("dubsim serving on http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:", 1)[1].split()[0])
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # it listens already: the line was printed after the bind
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stderr.read() == ""
        proc.stdout.close()
        proc.stderr.close()
