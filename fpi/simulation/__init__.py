"""Simulated assistants and their users: labeled traces from a causal model."""
