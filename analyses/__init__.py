"""End-to-end studies: ``python -m analyses tofu|muse|wmdp`` (:mod:`analyses.__main__`), ``python -m analyses.report``."""
