"""Project folders: olmoearth_run.yaml, dataset.json and requests, loaded and validated."""

from helios.runner.project.load import Project, ProjectError, load_project

__all__ = ["Project", "ProjectError", "load_project"]
