"""CLIP4Clip-style video-text model on an open_clip backbone. Pure torch, no Ray."""
