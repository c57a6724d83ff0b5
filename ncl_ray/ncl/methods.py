"""The test-time methods, one record each: the one place a method is described (no torch: the config and the CLI
read it). No Ray.

A record says what a method needs and what it may be used for; its scorer lives in ncl/normalize.py (the methods
of the first round) or in a module of its own (ncl/dbnorm.py, ncl/dbsn.py, ncl/dn.py). Everything that lists
methods derives from `REGISTRY`: the config's `eval` keys and their checks, `rerank`'s flags, eval's legend, the
served methods, the page's legend and the leak check.

- banks: which banks the method reads: "" none, "query" a bank of queries (eval.bank), "query+gallery" also a
  bank of gallery items (eval.gallery_bank: the other modality's training items, or the test gallery itself).
- transductive: the method reads the test queries themselves (a score depends on the other test queries); such
  a method is labelled in every table and is not held to the leak check's "a query alone scores the same".
- item_bias: the ranking is the plain one plus a bias per gallery item, so it folds into an inner-product index;
  column_only: that bias depends on the item's own column alone (a new item needs only its own).
- served: ncl-ray serve can fold it into an index (its item bias; dbnorm only in its static variant).
"""

from dataclasses import dataclass
from typing import Dict, Tuple, Union

Value = Union[int, float, str]


@dataclass(frozen=True)
class Setting:
    """One setting: config key `eval.<key>`, `rerank --<key with dashes>`, its default and where it comes from."""
    key: str
    default: Value
    source: str
    help: str
    bound: str = "positive"  # positive | non_negative | "" (a choice)
    choices: Tuple[str, ...] = ()
    at_most_bank: bool = False  # a count of bank queries: cannot exceed the bank's rows

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


@dataclass(frozen=True)
class Method:
    name: str
    title: str  # "name = what it does", for legends; {bank} = where its bank comes from
    banks: str = "query"
    transductive: bool = False
    item_bias: bool = False
    column_only: bool = False
    served: bool = False
    default: bool = False  # listed by eval.methods unless told
    settings: Tuple[Setting, ...] = ()
    page: str = ""  # served methods: the search page's one sentence, in plain words


REGISTRY: Tuple[Method, ...] = (
    Method("none", "none = cosine similarity, no normalisation", banks="", served=True, default=True,
           page="plain: the cosine similarity of the query and the video alone."),
    Method("ncl", "ncl = NCL gallery biases (Sinkhorn) from the {bank}",
           item_bias=True, served=True, default=True,
           settings=(Setting("n_iters", 10, "NCL.md", "ncl: test-time Sinkhorn iterations", "non_negative"),),
           page="NCL: adds a Sinkhorn bias to each video, so that every video is retrieved equally often by the "
                "training captions: videos that match every query (hubs) drop, rarely matched ones rise."),
    Method("dsl", "dsl = dual softmax over the test queries", banks="", transductive=True, default=True),
    Method("qbnorm", "qbnorm = QB-Norm inverted softmax over the {bank}", default=True,
           settings=(Setting("qbnorm_beta", 20.0, "QB-Norm's code", "qbnorm: inverse temperature"),
                     Setting("qbnorm_k", 1, "QB-Norm's code", "qbnorm: top-k of each bank query activated"))),
    Method("nnn", "nnn = Nearest Neighbor Normalization biases from the {bank}",
           item_bias=True, column_only=True, served=True,
           settings=(Setting("nnn_k", 256, "NNN's code (its README: 128)", "nnn: nearest bank queries per item",
                             at_most_bank=True),
                     Setting("nnn_alpha", 0.5, "NNN's code (its README: 0.75)", "nnn: weight of the bias",
                             "non_negative")),
           page="NNN: subtracts from each video a share of its mean similarity to its nearest training captions."),
    Method("is", "is = inverted softmax biases (logsumexp per item) over the {bank}", item_bias=True,
           column_only=True, served=True,
           settings=(Setting("is_beta", 20.0, "QB-Norm's 20", "is: inverse temperature"),),
           page="inverted softmax: divides by how strongly all training captions pick the video."),
    Method("csls", "csls = CSLS (each item's and each query's nearest-neighbour similarity) with the {bank}",
           item_bias=True, column_only=True, served=True,
           settings=(Setting("csls_k", 10, "MUSE's csls_knn_10", "csls: nearest neighbours on each side",
                             at_most_bank=True),),
           page="CSLS: subtracts from each video half its mean similarity to its nearest training captions."),
    Method("dbnorm", "dbnorm = DBNorm: inverted softmax over the {bank} times one over the gallery bank "
           "(dynamic: QB-Norm's gate on each)", banks="query+gallery", item_bias=True, column_only=True, served=True,
           settings=(Setting("dbnorm_variant", "static", "DBNorm's dynamic_normalized=False", "dbnorm: static "
                             "(both inverted softmaxes) or dynamic (QB-Norm's gate on each)", "",
                             ("static", "dynamic")),
                     Setting("dbnorm_beta_query", 20.0, "QB-Norm's 20 (DBNorm's code: 1/1.99 with its own "
                             "similarity scale)", "dbnorm: inverse temperature over the query bank"),
                     Setting("dbnorm_beta_gallery", 20.0, "QB-Norm's 20 (DBNorm's code: 3)",
                             "dbnorm: inverse temperature over the gallery bank"),
                     Setting("dbnorm_k", 1, "DBNorm's code", "dbnorm dynamic: top-k of each bank row activated")),
           page="DBNorm: divides by how strongly all training captions, and all training videos, pick the video."),
    Method("dbsn", "dbsn = DBSN: Sinkhorn over the {bank} against the test gallery and the gallery bank together",
           banks="query+gallery", item_bias=True, served=True,
           settings=(Setting("dbsn_reg", 0.01, "DBSN's code", "dbsn: entropic regularisation (POT's reg)"),
                     Setting("dbsn_iters", 10, "DBSN's dbsn.py", "dbsn: Sinkhorn iterations (POT's numItermax)")),
           page="DBSN: a Sinkhorn bias shared between this gallery and the training videos, so that every video "
                "is retrieved equally often by the training captions."),
    Method("dn", "dn = Distribution Normalization: subtract lambda times the {bank}'s mean embedding",
           item_bias=True, column_only=True, served=True,
           settings=(Setting("dn_lambda", 0.25, "DN's code", "dn: share of the mean subtracted",
                             "non_negative"),),
           page="DN: subtracts from each video a share of its mean similarity to all training captions."),
)

BY_NAME: Dict[str, Method] = {m.name: m for m in REGISTRY}
METHODS = tuple(BY_NAME)
DEFAULT_METHODS = tuple(m.name for m in REGISTRY if m.default)
BANK_METHODS = tuple(m.name for m in REGISTRY if m.banks)  # their statistics come from a bank of queries
GALLERY_BANK_METHODS = tuple(m.name for m in REGISTRY if "gallery" in m.banks)
TRANSDUCTIVE_METHODS = tuple(m.name for m in REGISTRY if m.transductive)
ITEM_BIAS_METHODS = tuple(m.name for m in REGISTRY if m.item_bias)  # plain ranking + a bias per item: foldable
PER_ITEM_METHODS = tuple(m.name for m in REGISTRY if m.column_only)  # an item's bias depends on its column only
# ncl first: what a served index answers with unless asked
SERVED_METHODS = ("ncl",) + tuple(m.name for m in REGISTRY if m.served and m.name != "ncl")
SERVED_BIASES = tuple(m for m in ITEM_BIAS_METHODS if m in SERVED_METHODS and m != "ncl")  # exported beside ncl's
SETTINGS: Tuple[Setting, ...] = tuple(s for m in REGISTRY for s in m.settings)


def owner(key: str) -> Method:
    """The method a setting belongs to."""
    return next(m for m in REGISTRY if any(s.key == key for s in m.settings))


def markdown_table() -> str:
    """The README's method table (between its `methods-table` markers; a test keeps them equal)."""
    rows = ["| method | what it does | banks | reads the test queries | served | settings (default, source) |",
            "|---|---|---|---|---|---|"]
    for m in REGISTRY:
        settings = "; ".join(f"`eval.{s.key}={s.default}` ({s.source})" for s in m.settings) or "-"
        rows.append(f"| `{m.name}` | {m.title.split(' = ', 1)[-1].format(bank='bank')} | {m.banks or '-'} | "
                    f"{'yes' if m.transductive else 'no'} | {'yes' if m.served else 'no'} | {settings} |")
    return "\n".join(rows)


def expand(methods) -> Tuple[str, ...]:
    """A list of method names with `all` standing for every method, in the registry's order."""
    return METHODS if "all" in methods else tuple(methods)
