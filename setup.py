"""mmlego: metadata lives in setup.cfg; the OpenMMLab stack is installed by tools/install_env.sh.

As the OpenMMLab packages do, the configs, tools, demos and ``model-index.yml`` ship inside the package under
``mmlego/.mim`` (copied into wheels and sdists, symlinked for editable installs), which is where ``mim train
mmlego CONFIG`` / ``mim test ...`` and ``mim search mmlego`` look for them.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import setup

MIM_FILES = ['tools', 'configs', 'demo', 'model-index.yml']


def add_mim_extension() -> None:
    """Fills ``mmlego/.mim`` with MIM_FILES: symlinks when installed in place, copies when a wheel is built."""
    if any(cmd in sys.argv for cmd in ('develop', 'editable_wheel')):
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'build', 'install')):
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim_path = osp.join(root, 'mmlego', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src, target = osp.join(root, name), osp.join(mim_path, name)
        if osp.islink(target) or osp.isfile(target):
            os.remove(target)
        elif osp.isdir(target):
            shutil.rmtree(target)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), target)
        elif osp.isfile(src):
            shutil.copyfile(src, target)
        else:
            shutil.copytree(src, target, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


if __name__ == '__main__':
    add_mim_extension()
    setup(package_data={'mmlego': ['.mim/model-index.yml', '.mim/configs/**/*', '.mim/tools/*', '.mim/demo/*']},
          include_package_data=True)
