"""The supported platforms (docs/platforms.md): one pin set per Python version,
install_deps.sh's platform check, and pycaffe's numpy-facing code on the
numpy this Python pins (1.26 on 3.11, 2.2 on 3.12 and 3.13)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

import caffe
import caffe.io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")


def pins_for(python_version, path=os.path.join(ROOT, "requirements.txt")):
    """{name: version} that pip would install from `path` on that Python."""
    env = {"python_version": python_version, "python_full_version": python_version + ".0"}
    pins = {}
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is not None and not Marker(str(req.marker)).evaluate(env):
            continue
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path}: {line!r} is not one == pin"
        assert req.name not in pins, f"{path}: {req.name} pinned twice for Python {python_version}"
        pins[req.name] = specs[0].version
    return pins


@pytest.mark.parametrize("python_version", SUPPORTED_PYTHONS)
def test_one_pin_per_package_on_every_supported_python(python_version):
    pins = pins_for(python_version)
    assert set(pins) == set(pins_for("3.11"))            # the same packages everywhere
    major = int(pins["numpy"].split(".")[0])
    assert major == (1 if python_version == "3.11" else 2)
    assert pins["protobuf"].startswith("4.21.")          # protoc 3.21 on all three platforms


def test_this_python_has_the_numpy_it_pins():
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert version in SUPPORTED_PYTHONS
    assert np.__version__ == pins_for(version)["numpy"]


def test_caffe_io_datum_round_trip_on_this_numpy():
    """BVLC's caffe.io converts with ndarray.tostring/np.fromstring, which
    numpy 2.3 removes: the numpy 2 pin must stay where they still work."""
    image = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    datum = caffe.io.array_to_datum(image, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 4, 5, 7)
    assert np.array_equal(caffe.io.datum_to_array(datum), image)
    floats = np.linspace(-1, 1, 2 * 3 * 2).reshape(2, 3, 2)
    back = caffe.io.datum_to_array(caffe.io.array_to_datum(floats))
    assert np.allclose(back, floats)
    blob = caffe.io.array_to_blobproto(floats[None].astype(np.float32))
    assert np.array_equal(caffe.io.blobproto_to_array(blob), floats[None].astype(np.float32))


def run_install_deps(tmp_path, os_release, **env):
    release = tmp_path / "os-release"
    release.write_text(os_release)
    return subprocess.run(["bash", os.path.join(ROOT, "docker", "install_deps.sh")],
                          env=dict(os.environ, FCN_OS_RELEASE=str(release), **env),
                          capture_output=True, text=True, timeout=60)


def test_install_deps_refuses_an_unknown_platform_in_one_line(tmp_path):
    out = run_install_deps(tmp_path, 'PRETTY_NAME="Fedora Linux 40"\nID=fedora\nVERSION_ID=40\n')
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "unsupported platform 'Fedora Linux 40' (fedora-40)" in lines[0]
    assert "Debian 12, Debian 13, Ubuntu 24.04" in lines[0]
    # an older release of a supported distribution is refused the same way
    out = run_install_deps(tmp_path, 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nID=ubuntu\nVERSION_ID="22.04"\n')
    assert out.returncode == 2 and "(ubuntu-22.04)" in out.stderr


def test_make_install_stops_at_the_platform_check_before_anything(tmp_path):
    release = tmp_path / "os-release"
    release.write_text('PRETTY_NAME="Arch Linux"\nID=arch\n')
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "--no-print-directory", "install", f"VENV={venv}"], cwd=ROOT,
                         env=dict(os.environ, FCN_OS_RELEASE=str(release)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "unsupported platform 'Arch Linux' (arch-unknown)" in out.stderr
    assert not venv.exists()                             # no venv, no pip, no build


def test_install_deps_knows_this_machine():
    """CI's own platform (Debian 12, or Debian 13 in `make distro-check`) is a
    supported one whose packages are all installed by now."""
    out = subprocess.run(["bash", os.path.join(ROOT, "docker", "install_deps.sh")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "all build packages present" in out.stdout


UBUNTU_2404 = 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nVERSION_ID="24.04"\n'


def bare_path(tmp_path):
    """A PATH holding `id` alone (no chromium, no snap)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "id").symlink_to(shutil.which("id"))
    return str(bindir)


def run_install_deps_test(tmp_path, os_release, **env):
    release = tmp_path / "os-release"
    release.write_text(os_release)
    return subprocess.run(["/bin/bash", os.path.join(ROOT, "docker", "install_deps.sh"), "--test"],
                          env=dict(os.environ, FCN_OS_RELEASE=str(release), **env),
                          capture_output=True, text=True, timeout=60)


def test_test_deps_on_ubuntu_without_snapd_names_the_ways_out_in_one_line(tmp_path):
    out = run_install_deps_test(tmp_path, UBUNTU_2404, PATH=bare_path(tmp_path))
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "only as a snap" in lines[0] and "FCN_CHROMIUM" in lines[0] and "BROWSER_TESTS=0" in lines[0]


def test_test_deps_on_ubuntu_take_a_chromium_on_path_or_named(tmp_path):
    path = bare_path(tmp_path)
    fake = tmp_path / "bin" / "chromium"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    out = run_install_deps_test(tmp_path, UBUNTU_2404, PATH=path)
    assert out.returncode == 0 and "Chromium at" in out.stdout, out.stderr
    out = run_install_deps_test(tmp_path, UBUNTU_2404, FCN_CHROMIUM=str(fake))
    assert out.returncode == 0 and f"FCN_CHROMIUM={fake}" in out.stdout
    out = run_install_deps_test(tmp_path, UBUNTU_2404, FCN_CHROMIUM=str(tmp_path / "none"))
    assert out.returncode == 1 and "is not an executable file" in out.stderr


@pytest.mark.parametrize("make_vars, marks, test_deps", [
    ([], "-m 'not slow'", True),
    (["BROWSER_TESTS=0"], "-m 'not slow and not browser'", False),
    (["BENCH_DEPS=0", "BROWSER_TESTS=0"], "-m 'not slow and not onnx and not browser'", False),
])
def test_make_test_fast_leaves_out_what_the_flags_name(make_vars, marks, test_deps):
    # not the flags of a make this suite may run under (MAKEFLAGS carries them down)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "BENCH_DEPS", "BROWSER_TESTS")}
    out = subprocess.run(["make", "-n", "--no-print-directory", "test-fast", *make_vars], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pytest_line = [line for line in out.stdout.splitlines() if "-m pytest" in line]
    assert len(pytest_line) == 1 and pytest_line[0].split("tests ", 1)[1].startswith(marks), pytest_line
    assert ("install_deps.sh --test" in out.stdout) == test_deps
