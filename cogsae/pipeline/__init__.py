"""The run: its configuration, its stages and its results."""
