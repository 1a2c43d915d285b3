"""cogsae: cognitive-neuroscience methods for locating concepts in language models and SAEs.

Pipeline stages, one module each (methods: docs/methods.md):
stimuli -> model -> extract -> sae -> contrasts / rsa / selection -> ensemble -> scoring -> report.
"""

__version__ = "0.1.0"
