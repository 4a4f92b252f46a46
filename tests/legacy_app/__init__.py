"""The app of the 1.x project that wrote tests/fixtures/legacy-1.2.1 (see tests/test_upgrade.py)."""
