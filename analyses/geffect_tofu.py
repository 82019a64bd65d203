"""Deprecated: ``python -m analyses.geffect_tofu`` is now ``python -m analyses tofu`` (this alias goes in the next release)."""
from analyses.cli import alias, exit_code  # noqa: F401
from analyses.config import StudyConfig  # noqa: F401

main, run = alias("tofu", "analyses.geffect_tofu")
if __name__ == "__main__":
    run()
