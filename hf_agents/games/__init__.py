"""Games built on the generic layers: each with its env, scripted players, data generation and figures."""
