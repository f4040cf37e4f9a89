"""Text embeddings computed in-process: the bundled all-MiniLM-L6-v2 model, run with numpy."""
