"""Rollouts: one engine for evaluation, data generation, preferences and RL; plots and videos."""
