"""hf-agents: train game-playing agents the way LLMs are trained."""

__version__ = "0.1.0"
