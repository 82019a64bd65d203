"""Deprecated: ``python -m analyses.geffect_muse`` is now ``python -m analyses muse`` (this alias goes in the next release)."""
from analyses.cli import alias, exit_code  # noqa: F401
from analyses.studies.muse import MuseStudyConfig  # noqa: F401

main, run = alias("muse", "analyses.geffect_muse")
if __name__ == "__main__":
    run()
