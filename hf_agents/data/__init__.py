"""Trajectory datasets: schema, writer, reader, importers."""

from hf_agents.data.dataset import TrajectoryDataset, WindowDataset, load_trajectories
from hf_agents.data.schema import DatasetFormatError
from hf_agents.data.writer import TrajectoryWriter

__all__ = ["DatasetFormatError", "TrajectoryDataset", "TrajectoryWriter", "WindowDataset", "load_trajectories"]
