"""LegoDNN det demo: ``demo/lego_demo.py`` for det configs (see there for the options).

    python demo/lego_det_demo.py CONFIG BANK [--memory-mb X] [--latency-ms Y] [--input PATH] --out out.png
"""
from lego_demo import main

if __name__ == '__main__':
    main(family='det')
