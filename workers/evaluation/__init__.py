"""Offline evaluation: dataset reading and anomaly-detection metrics."""
