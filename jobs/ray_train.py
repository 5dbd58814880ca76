"""The same training loop under Ray Train (``TorchTrainer``): data-parallel DDP over workers.

Ray stays out of ``refstar`` (a leaf library): this job module imports it, lazily. Each worker builds
the dataset and the net, wraps them with ``ray.train.torch.prepare_model`` (DDP, device) and
``prepare_data_loader`` (DistributedSampler), and runs ``Trainer``; rank 0 writes checkpoints
to the shared ``out_dir`` and every rank calls ``ray.train.report`` at each checkpoint (rank 0
with the checkpoint attached), as Ray Train requires. A restarted run resumes from Ray's latest
reported checkpoint, else from ``out_dir``.

Needs ``ray[train]`` (pandas, pyarrow, pydantic besides ray). Checked against Ray 2.60
(``ray.train.torch.TorchTrainer(train_loop_per_worker, train_loop_config=..., scaling_config=
ScalingConfig(num_workers, use_gpu), run_config=RunConfig(name, storage_path))``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refstar.training.dataset import PairConfig
from refstar.training.loop import TrainConfig


def _import_ray_train():
    try:
        import ray
        import ray.train
        import ray.train.torch
    except ImportError as e:
        raise RuntimeError(
            f"training on Ray needs Ray Train: pip install 'ray[train]' ({e})"
        ) from e
    return ray


def _worker_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: runs inside each Ray Train worker."""
    import ray.train
    import ray.train.torch
    from torch.utils.data import DataLoader

    from refstar.training.dataset import FacePairs, collate_pairs
    from refstar.training.loop import Trainer, build_net

    pair_cfg: PairConfig = config["pair_cfg"]
    train_cfg: TrainConfig = config["train_cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    from jobs.train import photo_analyzer

    aligned = config.get("aligned")
    data = FacePairs.from_folder(config["data"], pair_cfg, aligned=aligned, analyzer=photo_analyzer(aligned))
    # batches without any reference skip the reference branch: DDP must allow unused params
    net = ray.train.torch.prepare_model(
        build_net(config["preset"], pair_cfg.size, config["init"], train_cfg.seed),
        parallel_strategy_kwargs={"find_unused_parameters": True})
    loader = DataLoader(data, batch_size=train_cfg.batch_size, shuffle=True, drop_last=True,
                        collate_fn=collate_pairs, num_workers=train_cfg.num_workers)
    # the batch holds DegradationParams lists: the Trainer moves the tensors itself
    loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)

    def report(path: Path | None, metrics: dict) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(path)) if path is not None else None
        ray.train.report({**metrics, "world_size": world}, checkpoint=ckpt)

    trainer = Trainer(net, loader, train_cfg, config["out"], is_main=rank == 0,
                      on_checkpoint=report, device=ray.train.torch.get_device())
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            trainer.resume(d)
    elif config.get("resume"):
        trainer.resume()
    trainer.fit()


def train_on_ray(data: str | Path, out: str | Path, *, preset: str = "small",
                 pair_cfg: PairConfig | None = None, train_cfg: TrainConfig | None = None,
                 num_workers: int = 1, use_gpu: bool = False, init: str | None = None,
                 resume: bool = False, aligned: bool | None = None) -> dict[str, Any]:
    """Run ``Trainer`` on ``num_workers`` Ray Train workers (DDP); joins the running cluster
    (``ray.init()`` honours ``RAY_ADDRESS``) or starts a local one. Returns the last metrics."""
    ray = _import_ray_train()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init()
    out = Path(out).resolve()
    config = {"data": str(Path(data).resolve()), "out": str(out), "preset": preset,
              "pair_cfg": pair_cfg or PairConfig(), "train_cfg": train_cfg or TrainConfig(),
              "init": init, "resume": resume, "aligned": aligned}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="refstar-train", storage_path=str(out / "ray")),
    )
    result = trainer.fit()
    return dict(result.metrics or {})
