"""Dataset helpers: the synthetic datasets in standard OpenMMLab formats (:mod:`mmlego.datasets.synthetic`)."""
