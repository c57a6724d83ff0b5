"""NCL maths: Sinkhorn biases, query queues, gathers and the loss. Pure torch, no Ray."""
