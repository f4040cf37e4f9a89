"""Text embeddings computed in-process: the bundled all-MiniLM-L6-v2 model on ONNX Runtime
(`minilm.py`, from a graph `minilm_graph.py` builds out of the shipped weights), and the numpy
implementation it replaced, kept as the reference it is tested and benchmarked against."""
