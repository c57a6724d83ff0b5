"""ncl-ray: Normalized Contrastive Learning for text-video retrieval on Ray."""

__version__ = "0.1.0"
