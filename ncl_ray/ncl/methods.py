"""The test-time normalisations by name, in one place (no torch: the config and the CLI read it). No Ray.

none: plain similarities; ncl: Sinkhorn biases from a query bank; dsl: dual softmax over the test queries;
qbnorm: QB-Norm's querybank normalisation; nnn: Nearest Neighbor Normalization (a per-item bias from the item's
nearest bank queries); is: inverted softmax (a per-item bias: the item's logsumexp over the bank); csls: CSLS
(the item's mean similarity to its nearest bank queries, and the query's to its nearest items).

A method whose ranking is the plain one plus a bias per gallery item folds into an inner-product index
(ncl/fold.py), so the server can serve it: ncl, nnn, is and csls (csls's per-query term does not change a
query's ranking). dsl and qbnorm depend on the query set or on each query's top item: evaluation only. The
biases of nnn, is and csls depend on one item's column alone, so a new item needs only its own; ncl's
Sinkhorn biases depend on the whole gallery.
"""

METHODS = ("none", "ncl", "dsl", "qbnorm", "nnn", "is", "csls")
DEFAULT_METHODS = ("none", "ncl", "dsl", "qbnorm")  # what eval.methods lists unless told
BANK_METHODS = ("ncl", "qbnorm", "nnn", "is", "csls")  # their statistics come from a bank of queries
ITEM_BIAS_METHODS = ("ncl", "nnn", "is", "csls")  # plain ranking + a bias per gallery item: foldable
PER_ITEM_METHODS = ("nnn", "is", "csls")  # an item's bias depends on its own column only
SERVED_METHODS = ("ncl", "none", "nnn", "is", "csls")
