"""Closed-loop control of confidence-based early stopping for an LLM inference fleet."""

__version__ = "0.1.0"
