"""Drivers, each reading like pseudocode of its algorithm."""
