"""Helpers shared by the tests: tiny data sets on disk, plain reference implementations,
gloo process groups and the scenarios run in them."""
