"""mmlego: metadata lives in setup.cfg; the OpenMMLab stack is installed by tools/install_env.sh."""
from setuptools import setup

setup()
