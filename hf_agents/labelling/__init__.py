"""The designers' labelling app: label pairs or rankings of episode videos in a browser, stored durably, exported
as the preferences file the reward stage reads."""

from hf_agents.data.labels import LabelError, LabelStore, export_preferences, read_labels

__all__ = ["LabelError", "LabelStore", "export_preferences", "read_labels"]
