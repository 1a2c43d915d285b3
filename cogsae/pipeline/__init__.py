"""The run: its configuration (`config`), its stages (`stages`) and its results (`results`)."""

from cogsae.pipeline.config import RunConfig
from cogsae.pipeline.results import ConceptResult, RunResult
from cogsae.pipeline.stages import execute, prepare

__all__ = ["ConceptResult", "RunConfig", "RunResult", "execute", "prepare"]
