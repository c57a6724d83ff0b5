"""The test-time normalisations by name, in one place (no torch: the config and the CLI read it). No Ray.

none: plain similarities; ncl: Sinkhorn biases from a query bank; dsl: dual softmax over the test queries;
qbnorm: QB-Norm's querybank normalisation. The server folds ncl into its index, so it serves ncl and none.
"""

METHODS = ("none", "ncl", "dsl", "qbnorm")
SERVED_METHODS = ("ncl", "none")
