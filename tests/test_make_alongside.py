"""docker/make_alongside.sh: CI's CUDA compile beside the test suite. Both
must pass for it to pass, the side job's output comes after the main one's,
and a failing main job stops the side job instead of leaving it running."""
import os
import subprocess
import time

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "docker", "make_alongside.sh")

MAKEFILE = """\
side-ok:
\t@echo side-says-hello
side-fails:
\t@echo side-broke; exit 3
side-slow:
\t@sleep 20; touch side-finished
main-ok:
\t@sleep 1; echo main-says-hello
main-fails:
\t@echo main-broke; exit 4
"""


def run(tmp_path, beside, main):
    (tmp_path / "Makefile").write_text(MAKEFILE)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    start = time.monotonic()
    proc = subprocess.run(["bash", SCRIPT, beside, main], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    return proc, time.monotonic() - start


def test_both_pass_and_the_side_output_follows_the_main(tmp_path):
    proc, _ = run(tmp_path, "side-ok", "main-ok")
    assert proc.returncode == 0, proc.stderr
    assert "main-says-hello" in proc.stdout
    assert "side-says-hello" in proc.stderr
    assert "make side-ok (beside make main-ok): exit 0" in proc.stderr


def test_a_failing_side_job_fails_the_run(tmp_path):
    proc, _ = run(tmp_path, "side-fails", "main-ok")
    assert proc.returncode != 0
    assert "main-says-hello" in proc.stdout and "side-broke" in proc.stderr
    assert "make side-fails (beside make main-ok): exit 2" in proc.stderr


def test_a_failing_main_job_stops_the_side_job(tmp_path):
    proc, seconds = run(tmp_path, "side-slow", "main-fails")
    assert proc.returncode == 2, proc.stderr  # make's exit status for a failed recipe
    assert "main-broke" in proc.stdout
    assert seconds < 15, "the side job was waited for instead of stopped"
    time.sleep(0.5)
    assert not (tmp_path / "side-finished").exists()
    assert subprocess.run(["pgrep", "-f", "sleep 20"], capture_output=True).returncode != 0


def test_usage_without_two_targets():
    proc = subprocess.run(["bash", SCRIPT, "only-one"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: make_alongside.sh" in proc.stderr
