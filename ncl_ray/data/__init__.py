"""Video data: manifests, PyAV decoding, transforms, the Ray Data pipeline and the built-in dataset."""
