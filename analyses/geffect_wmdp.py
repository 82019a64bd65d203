"""Deprecated: ``python -m analyses.geffect_wmdp`` is now ``python -m analyses wmdp`` (this alias goes in the next release)."""
from analyses.cli import alias, exit_code  # noqa: F401
from analyses.studies.wmdp import WmdpStudyConfig  # noqa: F401

main, run = alias("wmdp", "analyses.geffect_wmdp")
if __name__ == "__main__":
    run()
