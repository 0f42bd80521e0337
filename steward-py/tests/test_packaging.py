"""Packaging: nats-server found beside the running Python, and the example script works."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from conftest import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV_NATS = pathlib.Path(sys.prefix) / "bin" / "nats-server"


@pytest.mark.skipif(not VENV_NATS.is_file(), reason="no nats-server in this Python's environment")
def test_embedded_broker_finds_nats_server_in_the_running_pythons_env(tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_SERVER_BIN", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"  # no venv on PATH: only sys.prefix can find it
    address = f"127.0.0.1:{free_port()}"
    code = (
        "import steward, sys\n"
        f"with steward.Node('central', data_dir={str(tmp_path)!r}, embedded_broker={address!r}) as n:\n"
        "    print(n.brokers[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"nats://{address}"


def test_example_script(tmp_path: pathlib.Path) -> None:
    example = REPO / "examples" / "python" / "shell_command.py"
    env = {**os.environ, "STEWARD_EXAMPLE_BROKER": f"127.0.0.1:{free_port()}"}
    out = subprocess.run(
        [sys.executable, str(example)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "ship1 answered" in out.stdout and "status ok (exit code 0)" in out.stdout
    assert "Linux" in out.stdout


def test_a_node_left_running_is_stopped_at_exit(tmp_path: pathlib.Path, nats) -> None:
    code = (
        "import logging, steward\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"node = steward.Node('central', [{nats.url!r}], data_dir={str(tmp_path)!r}).start()\n"
        "node.on_result(print)\n"
        "print('started', flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "started"
    assert "node stopped" in out.stderr, out.stderr


def test_no_log_lines_on_stderr_without_logging_setup(tmp_path: pathlib.Path, nats) -> None:
    """The `steward` logger has a NullHandler: a program that never configured logging gets no
    stderr lines for failures it already receives as results."""
    code = (
        "import logging, steward\n"
        "assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger('steward').handlers)\n"
        f"with steward.Node('ship1', [{nats.url!r}], data_dir={str(tmp_path / 's')!r}, signatures='off') as ship, \\\n"
        f"     steward.Node('central', [{nats.url!r}], data_dir={str(tmp_path / 'c')!r}, signatures='off') as central:\n"
        "    @ship.method('boom')\n"
        "    def boom(req):\n"
        "        raise RuntimeError('remote failure')\n"
        "    r = central.send('ship1', 'boom').result(timeout=30)\n"
        "    assert r.status == 'failed' and 'remote failure' in r.error, r.error\n"
        "    try:\n"
        "        central.send('ship1', 'no_such_method').result(timeout=30)\n"
        "    except steward.Rejected:\n"
        "        pass\n"
        "    central.on_result(lambda status: 1 / 0)\n"
        "    central.send('ship1', 'echo', ['x']).result(timeout=30)\n"
        "print('done')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert out.stderr == ""
