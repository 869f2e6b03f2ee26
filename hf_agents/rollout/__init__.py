"""Rollouts: one engine for evaluation, data generation, preferences and alignment; evaluation of any game,
outcome charts and videos."""
