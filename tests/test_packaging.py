"""Packaging: a wheel installs under `dropflow` only, and OpenCV is the headless build."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_opencv_is_the_headless_build_and_needs_no_libgl() -> None:
    dists = {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert "opencv-python-headless" in dists
    assert "opencv-python" not in dists, "the GUI build (needs libGL) must not be installed"
    import cv2

    assert cv2.__version__
    sos = list(Path(cv2.__file__).parent.rglob("cv2*.so"))
    assert sos
    ldd = subprocess.run(["ldd", str(sos[0])], capture_output=True, text=True)
    assert "libGL.so" not in ldd.stdout, "cv2 links libGL: a headless server cannot import it"
    # and the import works in a process that has no display at all
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    subprocess.run([sys.executable, "-c", "import cv2, insightface.app"], check=True, env=env)


@pytest.mark.timeout(300)
def test_wheel_installs_into_a_clean_venv(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = list(wheel_dir.glob("dropflow-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # the dependencies come from this environment (no network in tests); dropflow itself only
    # from the wheel, unpacked into the clean venv's site-packages
    site = next(venv.glob("lib/python*/site-packages"))
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert not [n for n in names if n.split("/")[0] in ("daemon", "engine", "tui")]
    assert any(n.startswith("dropflow/daemon/templates/config.yaml") for n in names)
    assert any(n.startswith("dropflow/daemon/templates/prompts/") for n in names)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    dropflow_main = "import sys; from dropflow.daemon.cli import main; sys.exit(main())"
    out = subprocess.run(
        [str(py), "-c", dropflow_main, "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0 and "drop-folder" in out.stdout
    # the editable dev install must not leak in: the package must come from the clean venv
    where = subprocess.run(
        [str(py), "-c", "import dropflow.daemon as d; print(d.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert str(site) in where.stdout
    bare = subprocess.run([str(py), "-c", "import daemon"], capture_output=True, text=True, cwd=tmp_path)
    assert bare.returncode != 0 and "No module named 'daemon'" in bare.stderr
    init = subprocess.run(
        [str(py), "-c", dropflow_main, "init", str(tmp_path / "proj")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "proj" / "config.yaml").is_file()
    assert (tmp_path / "proj" / "prompts" / "pov_annotation_prompt.txt").is_file()
