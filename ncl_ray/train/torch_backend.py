"""PyTorch's rendezvous on a private instance stays on loopback.

Ray Train's own backend lets rank 0 start PyTorch's TCPStore, which listens on every interface (`::`) whatever
MASTER_ADDR says. When the instance is private (rank 0's node address is loopback), rank 0 instead binds a socket to
127.0.0.1 itself and hands it to the store (`master_listen_fd`); every rank, rank 0 included, joins as a client
(`TORCHELASTIC_USE_AGENT_STORE`, which tells PyTorch the server is already up at MASTER_ADDR:MASTER_PORT). Gloo and
NCCL are pointed at the loopback interface for their own sockets. On a real cluster nothing changes.
"""

import datetime
import os
import socket
from dataclasses import dataclass

from ray.train._internal.utils import get_address_and_port
from ray.train.torch.config import TorchConfig, _set_torch_distributed_env_vars, _setup_torch_process_group
from ray.train.torch.config import _TorchBackend

LOOPBACK = ("127.0.0.1", "::1", "localhost")
_STORE = {}  # rank 0's store server, kept alive for the life of the worker process


def _serve_store(world_size: int, timeout_s: int) -> int:
    """On rank 0: a TCPStore server on a loopback socket bound here; returns its port."""
    from torch.distributed import TCPStore

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(max(128, world_size))
    port = sock.getsockname()[1]
    _STORE["server"] = TCPStore("127.0.0.1", port, world_size, True, datetime.timedelta(seconds=timeout_s),
                                wait_for_workers=False, master_listen_fd=sock.fileno())
    _STORE["socket"] = sock  # the store serves on this descriptor: it must stay open
    return port


def _join_store(port: int) -> None:
    """On every rank: rendezvous through the store rank 0 serves, and collective sockets on loopback."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True")
    if os.path.exists("/sys/class/net/lo"):  # Linux's loopback interface
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config):
        addr, _ = worker_group.execute_single(0, get_address_and_port)
        if addr not in LOOPBACK:
            return super().on_start(worker_group, backend_config)
        backend = backend_config.backend or "gloo"
        port = worker_group.execute_single(0, _serve_store, len(worker_group), backend_config.timeout_s)
        worker_group.execute(_join_store, port=port)
        worker_group.execute(_set_torch_distributed_env_vars)
        import ray

        ray.get([worker_group.execute_single_async(i, _setup_torch_process_group, backend=backend, world_rank=i,
                                                   world_size=len(worker_group), init_method="env://",
                                                   timeout_s=backend_config.timeout_s)
                 for i in range(len(worker_group))])


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """`TorchConfig` whose rendezvous listens on loopback when the instance is private."""

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend
