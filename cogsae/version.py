"""The package version: part of every cache and run key, so results of an older cogsae are
never reused by a newer one."""

__version__ = "0.2.0"
