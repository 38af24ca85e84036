"""Partitioning: prediction requests -> partitions -> windows."""

from helios.runner.partition.partitioners import (
    BUILTIN_PARTITIONERS,
    ChunkPartitioner,
    FixedWindowPartitioner,
    GridPartitioner,
    NoopPartitioner,
    Partition,
    Partitioner,
    ReprojectionPartitioner,
)
from helios.runner.partition.step import partition

__all__ = [
    "BUILTIN_PARTITIONERS",
    "ChunkPartitioner",
    "FixedWindowPartitioner",
    "GridPartitioner",
    "NoopPartitioner",
    "Partition",
    "Partitioner",
    "ReprojectionPartitioner",
    "partition",
]
