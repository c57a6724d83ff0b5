"""Where runs live and what they touch: Ray instances and clusters, run folders, checkpoints, Ray Jobs."""
