"""Downstream evaluation: benchmark readers, protocols (kNN, linear probe, fine-tune), baselines."""
