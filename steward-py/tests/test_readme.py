"""The Python snippets of the README's "### Python" section run verbatim (only the broker URL is
pointed at the test's nats-server), and the API they name exists."""

from __future__ import annotations

import builtins
import pathlib
import re
import subprocess
import sys

import steward
from conftest import NatsServer

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_BROKER = "nats://127.0.0.1:4222"
#: The snippets' callbacks print on the callback thread, and print() writes each argument and
#: separator on its own, so two threads' lines can mix ("True['total 16']"): run with each
#: print() whole.
WHOLE_PRINTS = (
    "import builtins, threading\n"
    "_print, _lock = builtins.print, threading.Lock()\n"
    "def _whole_print(*args, **kwargs):\n"
    "    with _lock:\n"
    "        _print(*args, **kwargs)\n"
    "builtins.print = _whole_print\n"
)


def python_section() -> str:
    text = README.read_text()
    return text.split("\n### Python\n", 1)[1].split("\n## ", 1)[0]


def snippets(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", python_section(), re.S)


def run(code: str, nats: NatsServer, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    assert DEFAULT_BROKER in code
    code = code.replace(DEFAULT_BROKER, nats.url)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_section_has_the_snippets_this_test_runs() -> None:
    assert len(snippets("python")) == 2
    [install, wheel] = snippets("bash")
    assert "pip install ./steward-py" in install
    assert "maturin build --release -m steward-py/Cargo.toml -o target/python-wheel" in wheel
    assert "pip install target/python-wheel/steward-*.whl" in wheel


def test_client_snippet(make_node, enrol, tmp_path: pathlib.Path, nats: NatsServer) -> None:
    # The ships joined the snippet's central (same data_dir) before, as the README says.
    work = tmp_path / "client"
    work.mkdir()
    central = make_node("central", signatures=None, data_dir=work / "central-data").start()
    enrol(central, "ship1")
    enrol(central, "ship2")
    central.stop()
    out = run(WHOLE_PRINTS + snippets("python")[0], nats, work)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ok 0 ") and "load average" in lines[0], lines
    # What the snippet waits for; its callbacks' lines may or may not come before it ends.
    assert "['ping', 'ping']" in lines and "hi" in lines and "True" in lines, out.stdout
    assert (work / "central-data").is_dir()


def test_server_snippet(tmp_path: pathlib.Path, nats: NatsServer) -> None:
    # A default central makes the token; the snippet joins ship1 with it and leaves it running;
    # once central approved ship1's key, central calls both methods.
    central = (
        "import steward\n"
        f"central = steward.Node('central', [{DEFAULT_BROKER!r}], data_dir='central-data').start()\n"
        "token = central.join_token()\n"
    )
    check = (
        "\nimport json, time\n"
        "deadline = time.monotonic() + 30\n"
        "while not any(k['node'] == 'ship1' and k['state'] == 'approved' for k in central.keys()):\n"
        "    assert time.monotonic() < deadline, central.keys()\n"
        "    time.sleep(0.05)\n"
        "free = json.loads(central.send('ship1', 'disk_free', ['/']).result(timeout=30).stdout)\n"
        "assert set(free) == {'total', 'used', 'free'}, free\n"
        "assert central.send('ship1', 'notice', ['x'], kind='event').result(timeout=30).ok\n"
        "ship.stop()\n"
        "central.stop()\n"
        "print('served')\n"
    )
    out = run(central + snippets("python")[1] + check, nats, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["event from central ['x']", "served"]


def test_named_api_exists() -> None:
    section = python_section()
    for name in re.findall(r"`steward\.(\w+)`", section) + re.findall(r"`(\w+)`", section):
        if name[0].isupper() and not hasattr(builtins, name) and name not in {"NATS_SERVER_BIN", "PATH"}:
            assert hasattr(steward, name), name
    for method in ["receipt", "cancel", "on_result", "on_error", "on_event", "method", "send_json"]:
        assert hasattr(steward.Node, method), method
