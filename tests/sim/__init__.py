"""Simulation of a KurrentDB cluster that several charm units run against."""
