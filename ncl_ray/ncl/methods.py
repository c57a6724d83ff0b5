"""The test-time normalisations by name, in one place (no torch: the config and the CLI read it). No Ray.

none: plain similarities; ncl: Sinkhorn biases from a query bank; dsl: dual softmax over the test queries;
qbnorm: QB-Norm's querybank normalisation; nnn: Nearest Neighbor Normalization (a per-item bias from the item's
nearest bank queries). The server folds ncl into its index, so it serves ncl and none.
"""

METHODS = ("none", "ncl", "dsl", "qbnorm", "nnn")
DEFAULT_METHODS = ("none", "ncl", "dsl", "qbnorm")  # what eval.methods lists unless told
BANK_METHODS = ("ncl", "qbnorm", "nnn")  # their statistics come from a bank of queries
SERVED_METHODS = ("ncl", "none")
