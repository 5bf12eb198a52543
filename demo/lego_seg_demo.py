"""LegoDNN seg demo: ``demo/lego_demo.py`` for seg configs (see there for the options).

    python demo/lego_seg_demo.py CONFIG BANK [--memory-mb X] [--latency-ms Y] [--input PATH] --out out.png
"""
from lego_demo import main

if __name__ == '__main__':
    main(family='seg')
