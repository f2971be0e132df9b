"""AnomalyGPT's image decoder: patch tokens compared with text of normal and abnormal states."""
