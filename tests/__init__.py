"""The test suite (a package, so that ``tests.helpers`` imports the same in spawned workers)."""
