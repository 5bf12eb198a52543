"""evaluate_model with data parallel (2 gloo ranks on CPU): max_batches counts every rank's samples."""
import os
import socket

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, queue) -> None:
    import torch.distributed as dist
    from mmengine.evaluator import BaseMetric, Evaluator

    from mmlego.engine.task_metrics import evaluate_model

    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)

    class Count(BaseMetric):
        """The samples the evaluator kept, and which ranks they came from."""

        def process(self, data_batch, data_samples):
            self.results.extend(data_samples)

        def compute_metrics(self, results):
            return dict(count=len(results), ranks=len({r['rank'] for r in results}))

    class Model(torch.nn.Module):
        def val_step(self, batch):
            return [dict(rank=rank, index=int(i)) for i in batch]

    class Loader(list):
        dataset = list(range(100))  # the whole val set: far more than the evaluated batches

    loader = Loader([torch.arange(3) + 3 * b for b in range(5)])  # 5 batches of 3 per rank
    metrics = evaluate_model(Model(), loader, Evaluator(Count()), max_batches=2)
    queue.put((rank, metrics))
    dist.destroy_process_group()


def test_max_batches_counts_every_rank():
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(rank, 2, port, queue)) for rank in range(2)]
    for proc in procs:
        proc.start()
    results = dict(queue.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    # 2 batches of 3 on each of 2 ranks: 12 samples from both ranks, not one rank's 6.
    assert results[0] == results[1] == {'count': 12, 'ranks': 2}
