"""HTTP simulator of the MentionsAPI and MentionLab read endpoints, for tests and benchmarks."""

from simulator.app import SimConfig, create_app, run_in_thread, serve, serve_in_thread
from simulator.dataset import Dataset

__all__ = ["Dataset", "SimConfig", "create_app", "run_in_thread", "serve", "serve_in_thread"]
