"""LegoDNN action demo: ``demo/lego_demo.py`` for action configs (see there for the options).

    python demo/lego_action_demo.py CONFIG BANK [--memory-mb X] [--latency-ms Y] [--input PATH] --out out.png
"""
from lego_demo import main

if __name__ == '__main__':
    main(family='action')
