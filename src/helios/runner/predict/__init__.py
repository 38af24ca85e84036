"""Inference: the runner's model, crops over windows, blended window outputs."""

from helios.runner.predict.inference import InferenceResult, run_inference
from helios.runner.predict.model import RunnerModel
from helios.runner.predict.outputs import write_window_geojson, write_window_output
from helios.runner.predict.results import InferenceResultsConfig

__all__ = [
    "InferenceResult",
    "InferenceResultsConfig",
    "RunnerModel",
    "run_inference",
    "write_window_geojson",
    "write_window_output",
]
