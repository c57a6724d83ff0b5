"""Training on Ray Train: the worker loop, the driver-side fit, builders (config to objects), input checks, sweeps."""
