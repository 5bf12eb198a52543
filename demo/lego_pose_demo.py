"""LegoDNN pose demo: ``demo/lego_demo.py`` for pose configs (see there for the options).

    python demo/lego_pose_demo.py CONFIG BANK [--memory-mb X] [--latency-ms Y] [--input PATH] --out out.png
"""
from lego_demo import main

if __name__ == '__main__':
    main(family='pose')
