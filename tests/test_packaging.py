"""``pip install .`` (not editable) gives working entry points that find the
shipped configs, from any folder."""
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "wheel"), ROOT], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = list((tmp / "wheel").glob("leap_plugin-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert "leap_plugin/configs/Wesnoth/leap_cf_mnv2.yml" in names and "leap_plugin/configs/face/ms1m_lt_base.py" in names
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(tmp / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    return tmp


def run_installed(tmp, code):
    # only the installed copy on the path, run from a folder that has no configs/
    env = dict(os.environ, PYTHONPATH=str(tmp / "site"), CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def test_installed_package_finds_its_configs_from_anywhere(installed):
    run = run_installed(installed, "import leap_plugin, os\n"
                                   "from leap_plugin.reid.config import load_config\n"
                                   "from leap_plugin.face.config import load_config as face_config\n"
                                   "assert 'site' in leap_plugin.__file__, leap_plugin.__file__\n"
                                   "cfg = load_config('configs/Wesnoth/leap_cf_mnv2.yml')\n"
                                   "assert cfg.MODEL.HEADS.LEAP.ENABLED\n"
                                   "load_config('configs/Market1501/leap_cf_R50.yml')\n"
                                   "face_config('configs/face/ms1m_h5k_t20k_leap_cv.py', ['rec=/x', 'output=/y'])\n"
                                   "from leap_plugin.runs import SPRITE_CONFIGS\n"
                                   "assert os.path.isfile(os.path.join(SPRITE_CONFIGS, 'cosface_mnv2.yml'))\n"
                                   "print('ok')")
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


def test_installed_entry_points_run(installed):
    for module in ("leap_plugin.cli.train", "leap_plugin.cli.demo", "leap_plugin.cli.face_train"):
        run = run_installed(installed, f"import sys, runpy; sys.argv = ['x', '--help']; "
                                       f"runpy.run_module('{module}', run_name='__main__')")
        assert run.returncode == 0 and "usage" in run.stdout, (module, run.stderr[-2000:])
