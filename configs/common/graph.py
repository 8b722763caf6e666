# nn.Graph (static graph) settings; 1F1B over micro-batches needs graph mode (eager runs the
# pipeline stages one after another).
from libai.config import LazyCall
from libai.models.utils import GraphBase

graph = dict(
    enabled=True,  # False: eager mode (pipeline stages run one after another, not 1F1B)
    debug=-1,  # >= 0 prints the graph's debug output at that level
    train_graph=LazyCall(GraphBase)(is_train=True),
    eval_graph=LazyCall(GraphBase)(is_train=False),
)
