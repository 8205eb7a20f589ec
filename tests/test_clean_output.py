"""A clean first run: no TensorFlow start-up lines from the scripts, no setuptools warnings on install."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OLD_GAN_RUN = REPO / "tests" / "fixtures" / "old_runs" / "gan"
STARTUP_MARKERS = ("oneDNN", "absl::InitializeLog", "This TensorFlow binary is optimized")


def _run_generate(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess:
    """``generate.py`` on a stored GAN run: a short command that imports TensorFlow."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "CELLGEN_VERBOSE", "CELLGEN_DEBUG")}
    env.update(environment)
    return subprocess.run([sys.executable, str(REPO / "generate.py"), "--run", str(OLD_GAN_RUN), "--out",
                           str(tmp_path / "images"), "--n", "2", "--quiet"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_scripts_print_no_tensorflow_startup_lines(tmp_path):
    result = _run_generate(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert len(list((tmp_path / "images").glob("*.png"))) == 2
    for marker in STARTUP_MARKERS:
        assert marker not in output, output


@pytest.mark.parametrize("arguments, environment", [([], {"CELLGEN_VERBOSE": "1"}),
                                                    ([], {"TF_CPP_MIN_LOG_LEVEL": "0"}),
                                                    (["--verbose"], {})])
def test_the_startup_lines_are_shown_on_request(arguments, environment):
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "CELLGEN_VERBOSE")}
    result = subprocess.run([sys.executable, "-c", "import cellgen.cli, tensorflow", *arguments], cwd=REPO,
                            env={**env, **environment}, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    if not any(marker in output for marker in STARTUP_MARKERS):
        pytest.skip("this TensorFlow build prints no start-up lines")


def test_only_startup_lines_are_filtered(capfd):
    from cellgen.cli import _STARTUP_LINE, _import_with_filtered_stderr

    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "I0000 00:00:1796185388.126949    6400 port.cc:153] oneDNN custom operations are on.\n"
             "I0000 00:00:1796185388.168158    6400 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
             "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow\n")
    kept = ("W0000 00:00:1796185388.168158    6400 gpu_device.cc:1] Cannot dlopen some GPU libraries.\n"
            "UserWarning: something the user should see\n")
    assert all(_STARTUP_LINE.match(line) for line in noise.splitlines(keepends=True))
    assert not any(_STARTUP_LINE.match(line) for line in kept.splitlines(keepends=True))

    def exec_module(module):
        os.write(2, (noise + kept).encode())
        print("from Python", file=sys.stderr)

    _import_with_filtered_stderr(exec_module, None)
    # (Under capfd, Python's sys.stderr bypasses file descriptor 2, so only the sets of lines compare.)
    assert sorted(capfd.readouterr().err.splitlines()) == sorted((kept + "from Python\n").splitlines())
    with pytest.raises(ZeroDivisionError):  # a failing import restores stderr and still shows the rest
        _import_with_filtered_stderr(lambda module: (os.write(2, kept.encode()), 1 / 0), None)
    assert capfd.readouterr().err == kept
    os.write(2, b"stderr is back\n")
    assert capfd.readouterr().err == "stderr is back\n"


def test_package_build_has_no_implicit_package_warnings_and_ships_the_sample(tmp_path):
    # setuptools itself (the version a no-isolation `pip wheel` would use), writing only under tmp_path.
    pytest.importorskip("setuptools")
    result = subprocess.run([sys.executable, "-W", "default", "-c", "from setuptools import setup; setup()", "-q",
                             "egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(tmp_path / "lib")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "would be ignored" not in output and "is absent from the `packages`" not in output, output
    from cellgen.sample_data import sample_path

    shipped = sorted(path.relative_to(REPO / "cellgen") for path in sample_path("train").parent.rglob("*.jpg"))
    built = sorted(path.relative_to(tmp_path / "lib" / "cellgen")
                   for path in (tmp_path / "lib" / "cellgen").rglob("*.jpg"))
    assert shipped and built == shipped
    assert (tmp_path / "lib" / "cellgen" / "sample_data" / "ATTRIBUTION.md").is_file()
