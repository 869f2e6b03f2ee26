"""Trajectory datasets: schema, writer, reader, importers."""

from hf_agents.data.dataset import TrajectoryDataset, WindowDataset, load_trajectories
from hf_agents.data.writer import DatasetFormatError, TrajectoryWriter

__all__ = ["DatasetFormatError", "TrajectoryDataset", "TrajectoryWriter", "WindowDataset", "load_trajectories"]
