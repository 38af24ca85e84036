"""Helios: an open framework for multimodal, multitemporal Earth-observation foundation models."""

__version__ = "0.1.0"
