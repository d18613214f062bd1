"""`iii worker add|remove|list` on a project's config.yaml with comments: the file is edited as
text (comments and the rest kept), only built-in workers and honourable versions are added, the
result starts, and nothing is downloaded."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import III_BIN

COMMENTED = """\
# my project
workers:
  # where workers connect
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0   # any free port

  - name: iii-state   # kept in memory
    config: { adapter: { name: kv, config: { store_method: in_memory } } }

# trailing notes stay here
"""


def iii(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(III_BIN), *args], capture_output=True, text=True, timeout=15, cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_add_list_remove_keep_comments(tmp_path: Path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(COMMENTED)

    p = iii("worker", "add", "iii-stream@0.11.6-next.3", cwd=tmp_path)
    assert p.returncode == 0, p
    assert "added iii-stream" in p.stdout
    text = cfg.read_text()
    assert text.startswith(COMMENTED.split("# trailing")[0]), text
    assert text.endswith("# trailing notes stay here\n"), text
    assert "  - name: iii-stream\n    config:\n      port: 3112\n      host: 127.0.0.1\n" in text

    p = iii("worker", "add", "pubsub", cwd=tmp_path)  # the newer short name
    assert p.returncode == 0, p
    p = iii("worker", "add", "iii-stream", cwd=tmp_path)
    assert p.returncode == 0 and "already in config.yaml" in p.stdout, p

    p = iii("worker", "list", cwd=tmp_path)
    assert p.returncode == 0, p
    for name in ("iii-worker-manager", "iii-state", "iii-stream", "iii-pubsub"):
        assert name in p.stdout, p.stdout
    assert "always running (mandatory): iii-engine-functions, iii-observability, iii-telemetry" in p.stdout

    p = iii("worker", "remove", "iii-stream", cwd=tmp_path)
    assert p.returncode == 0, p
    p = iii("worker", "remove", "pubsub", cwd=tmp_path)
    assert p.returncode == 0, p
    assert cfg.read_text() == COMMENTED, "add then remove gives the original file back"


def test_refusals_leave_the_file_alone(tmp_path: Path):
    cfg = tmp_path / "other.yaml"
    cfg.write_text(COMMENTED)
    for args, why in [
        (("worker", "add", "iii-stream@0.12.0", "-c", "other.yaml"), "cannot be provided"),
        (("worker", "add", "left-pad", "-c", "other.yaml"), "unknown worker 'left-pad'"),
        (("worker", "remove", "iii-cron", "-c", "other.yaml"), "not in other.yaml"),
    ]:
        p = iii(*args, cwd=tmp_path)
        assert p.returncode == 1, p
        assert why in p.stderr, p.stderr
        assert "downloads nothing" in p.stderr or "remove" in args
    assert cfg.read_text() == COMMENTED
    p = iii("worker", "list", cwd=tmp_path)  # no config.yaml here
    assert p.returncode == 2 and "not found" in p.stderr, p


def test_add_creates_a_config_that_starts(tmp_path: Path):
    p = iii("worker", "add", "iii-worker-manager", cwd=tmp_path)
    assert p.returncode == 0, p
    assert (tmp_path / "config.yaml").read_text() == "workers:\n  - name: iii-worker-manager\n    config:\n      port: 49134\n"
    p = iii("worker", "add", "iii-exec", cwd=tmp_path)
    assert p.returncode == 0, p
    # The engine accepts what `add` wrote (config errors exit 2 before any port is bound; the
    # exec block's default command is replaced so that nothing real runs).
    text = (tmp_path / "config.yaml").read_text().replace("port: 49134", "port: 0\n      host: 127.0.0.1")
    text = text.replace("npm run dev", "true")
    (tmp_path / "config.yaml").write_text(text)
    proc = subprocess.Popen([str(III_BIN)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "engine ready" in line:
                break
            assert proc.poll() is None, line
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
