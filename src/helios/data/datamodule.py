"""`PretrainDataModule`: H5 samples -> masked, collated `MaskedBatch`es for pretraining.

Per batch the main process draws a patch size, a crop size (in tokens per side) and the number
of timesteps that fits the token budget (`BatchPlan`). Workers load each sample and tokenize it
under that plan (crop, normalize, mask: `SampleTokenizer`); `collate` stacks them (both in
`helios.data.batching`). Every random choice derives from
(seed, epoch, batch index, position in batch), so a run is reproducible for a seed whatever
the number of workers, shards evenly across DDP ranks, and resumes mid-epoch from
`state_dict()`.

Under Lightning with several devices, set `Trainer(use_distributed_sampler=False)`: the
batch sampler shards by rank itself (the Helios CLI sets this by default).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from helios.data.augment import ViewAugmentation
from helios.data.batching import (
    BatchPlan,
    SampleTokenizer,
    TokenizedSample,
    collate,
    plan_batch,
)
from helios.data.dataset import H5SampleDataset
from helios.data.h5 import tune_allocator
from helios.data.masking import MaskingStrategy, NoMasking, RandomMasking
from helios.data.normalize import Normalizer, NormStats

PlannedIndex = tuple[int, BatchPlan, int]
"""(dataset index, batch plan, position in the batch)."""


class PlannedBatchSampler(Sampler[list[PlannedIndex]]):
    """Yields batches of (index, plan, position), sharded by rank, reproducible, skippable."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        planner: Any,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.planner = planner
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip_batches = 0
        # Lightning calls `set_epoch` on `batch_sampler.sampler`, not on the batch sampler.
        self.sampler = _EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (Lightning calls this before each one)."""
        if epoch != self.epoch:
            self.skip_batches = 0
        self.epoch = epoch

    def _rank_indices(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        per_rank = self.num_samples // self.world_size  # equal shards keep ranks in step
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        n = self.num_samples // self.world_size
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[PlannedIndex]]:
        indices = self._rank_indices()
        # Skipping applies to the first iteration after a resume only; the loop may be left
        # before the generator is exhausted, so reset it now.
        skip, self.skip_batches = self.skip_batches, 0
        for b in range(skip, len(self)):
            chunk = indices[b * self.batch_size : (b + 1) * self.batch_size]
            # The plan depends on the batch number, not the rank, so all ranks agree on shapes.
            plan = self.planner(np.random.default_rng([self.seed, self.epoch, b]))
            yield [(int(i), plan, k + self.rank * self.batch_size) for k, i in enumerate(chunk)]


def _worker_init(worker_id: int) -> None:
    """Per-worker setup: keep decode buffers in the heap (see `tune_allocator`)."""
    tune_allocator()


class _EpochHook:
    """Forwards `set_epoch` to a `PlannedBatchSampler`."""

    def __init__(self, owner: PlannedBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the owning batch sampler."""
        self.owner.set_epoch(epoch)


class PlannedDataset(Dataset[TokenizedSample]):
    """Tokenizes `H5SampleDataset` items under their batch plan."""

    def __init__(self, base: H5SampleDataset, tokenizer: SampleTokenizer, seed: int) -> None:
        self.base = base
        self.tokenizer = tokenizer
        self.seed = seed
        self.fixed_plan: BatchPlan | None = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: PlannedIndex | int) -> TokenizedSample:
        if isinstance(item, (int, np.integer)):  # plain indices: the fixed predict plan
            assert self.fixed_plan is not None
            item = (int(item), self.fixed_plan, int(item))
        index, plan, position = item
        rng = np.random.default_rng([plan.seed, position])
        return self.tokenizer(self.base[index], plan, rng, self.base.sample_index(index))


class PretrainDataModule(L.LightningDataModule):
    """Streams an H5 training set into masked pretraining batches."""

    def __init__(
        self,
        h5_dir: str,
        modalities: list[str] | None = None,
        batch_size: int = 32,
        patch_sizes: list[int] | None = None,
        crop_tokens: tuple[int, int] = (2, 12),
        token_budget: int = 2250,
        max_timesteps: int = 12,
        masking: MaskingStrategy | None = None,
        num_views: int = 1,
        augmentation: ViewAugmentation | None = None,
        view_crops: bool = False,
        norm_stats: str | None = None,
        val_samples: int = 0,
        num_workers: int = 2,
        pin_memory: bool = True,
        seed: int = 0,
    ) -> None:
        """Configure the stream.

        Args:
            h5_dir: an H5 dataset directory (holding sample_*.h5 and sample_metadata.csv).
            modalities: modalities to load (default: every modality in the directory).
            batch_size: samples per batch on each device.
            patch_sizes: patch sizes (10 m pixels) drawn per batch; default 1-8.
            crop_tokens: (min, max) tokens per side of the random crop, drawn per batch.
            token_budget: maximum tokens per sample; timesteps are cut to fit it.
            max_timesteps: upper bound on timesteps per sample.
            masking: masking strategy (default random, 50% encode / 50% decode).
            num_views: independently masked views per sample (2 for contrastive losses).
            augmentation: gives each view its own values (`helios.data.augment`, such as
                `GainJitter`); default none: views differ in their masks only.
            view_crops: each view draws its own crop (default: the views share one crop).
            norm_stats: JSON from `helios data stats`; modalities without stats use fixed ranges.
            val_samples: hold out the last N samples for validation.
            num_workers: DataLoader worker processes.
            pin_memory: pin batches for faster host-to-GPU copies.
            seed: seed of every random choice (order, plans, crops, masks).

        """
        super().__init__()
        # the model logs modalities; masking and augmentation are objects, not plain values
        self.save_hyperparameters(ignore=["masking", "augmentation", "modalities"])
        self.h5_dir = h5_dir
        self.modalities = modalities
        self.batch_size = batch_size
        self.patch_sizes = list(patch_sizes or range(1, 9))
        if any(not 1 <= p <= 8 for p in self.patch_sizes):
            raise ValueError(f"patch sizes must be in 1-8, got {self.patch_sizes}")
        self.crop_tokens = (int(crop_tokens[0]), int(crop_tokens[1]))
        self.token_budget = token_budget
        self.max_timesteps = max_timesteps
        self.masking = masking or RandomMasking()
        self.num_views = num_views
        self.augmentation = augmentation
        self.view_crops = view_crops
        self.norm_stats = norm_stats
        self.val_samples = val_samples
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self._base: H5SampleDataset | None = None
        self._train_sampler: PlannedBatchSampler | None = None
        self._resume: dict[str, int] = {}
        self._consumed_epoch = 0
        self.batches_consumed = 0

    # -- setup -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Open the H5 directory (cheap: reads the metadata CSV only)."""
        if self._base is None:
            self._base = H5SampleDataset(self.h5_dir, self.modalities)
            self.modalities = self._base.modalities
            first = [self._base[i] for i in range(min(8, len(self._base)))]
            self.sample_size = first[0].ref_size() or max(self.patch_sizes)
            # no point planning more timesteps than the samples have
            self.max_timesteps = max(
                1, min(self.max_timesteps, max(s.num_timesteps for s in first))
            )
            if self.val_samples >= len(self._base):
                raise ValueError(
                    f"{self.h5_dir}: val_samples={self.val_samples} leaves no training samples"
                )

    @property
    def normalizer(self) -> Normalizer:
        """The normalization applied to every sample (also stored in checkpoints)."""
        stats = NormStats.load(Path(self.norm_stats)) if self.norm_stats else None
        return Normalizer(stats)

    def _planner(self, rng: np.random.Generator) -> BatchPlan:
        assert self.modalities is not None
        return plan_batch(
            rng,
            self.modalities,
            self.sample_size,
            self.patch_sizes,
            self.crop_tokens,
            self.token_budget,
            self.max_timesteps,
        )

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _predict_plan(self, rng: np.random.Generator) -> BatchPlan:
        """Whole samples at the largest patch size, every timestep up to `max_timesteps`."""
        patch = max(self.patch_sizes)
        return BatchPlan(patch, self.sample_size // patch, self.max_timesteps, seed=0)

    def _loader(
        self, subset: np.ndarray, shuffle: bool, seed: int
    ) -> tuple[DataLoader, PlannedBatchSampler]:
        self.setup()
        assert self._base is not None and self.modalities is not None
        base = self._base.subset(subset)
        tokenizer = SampleTokenizer(
            self.modalities,
            self.normalizer,
            self.masking,
            self.num_views,
            augmentation=self.augmentation,
            view_crops=self.view_crops,
        )
        rank, world = self._rank_world()
        sampler = PlannedBatchSampler(
            len(base),
            self.batch_size,
            self._planner,
            seed=seed,
            shuffle=shuffle,
            drop_last=shuffle,
            rank=rank,
            world_size=world,
        )
        loader = DataLoader(
            PlannedDataset(base, tokenizer, seed),
            batch_sampler=sampler,
            worker_init_fn=_worker_init,
            collate_fn=collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
        )
        return loader, sampler

    def train_dataloader(self) -> DataLoader:
        """Shuffled, sharded, resumable training batches."""
        self.setup()
        assert self._base is not None
        n = len(self._base) - self.val_samples
        loader, sampler = self._loader(np.arange(n), shuffle=True, seed=self.seed)
        if self._resume:
            sampler.epoch = self._resume["epoch"]
            sampler.skip_batches = self._resume["batches_consumed"]
            self._consumed_epoch = sampler.epoch
            self.batches_consumed = self._resume["batches_consumed"]
            self._resume = {}
        self._train_sampler = sampler
        return loader

    def val_dataloader(self) -> DataLoader | list:
        """The held-out samples with fixed plans (same batches every epoch)."""
        self.setup()
        assert self._base is not None
        if not self.val_samples:
            return []
        n = len(self._base)
        loader, _ = self._loader(
            np.arange(n - self.val_samples, n), shuffle=False, seed=self.seed + 1
        )
        return loader

    def test_dataloader(self) -> DataLoader | list:
        """The held-out samples (as validation)."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Every sample, whole and unmasked, in order (for embeddings).

        A plain DataLoader (one fixed plan), so Lightning's predict loop can wrap its sampler.
        """
        self.setup()
        assert self._base is not None and self.modalities is not None
        tokenizer = SampleTokenizer(
            self.modalities, self.normalizer, NoMasking(), 1, center_crop=True
        )
        dataset = PlannedDataset(self._base, tokenizer, self.seed)
        dataset.fixed_plan = self._predict_plan(np.random.default_rng(0))
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=collate,
            num_workers=self.num_workers,
        )

    # -- resume ------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count consumed training batches (the basis of mid-epoch resume).

        Validation inside fit transfers its batches through this hook too; they are not part
        of the training stream, so they do not count.
        """
        trainer = self.trainer  # LightningDataModule's attribute (None outside a Trainer)
        training = trainer.training if trainer is not None else True
        if training and self._train_sampler is not None:
            if self._train_sampler.epoch != self._consumed_epoch:
                self._consumed_epoch, self.batches_consumed = self._train_sampler.epoch, 0
            self.batches_consumed += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream: epoch and training batches consumed in it."""
        return {
            "epoch": self._consumed_epoch,
            "batches_consumed": self.batches_consumed,
            "seed": self.seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a saved position: the next train loader skips what was consumed."""
        if int(state_dict.get("seed", self.seed)) != self.seed:
            raise ValueError(
                f"checkpoint data seed {state_dict['seed']} differs from the configured "
                f"seed {self.seed}"
            )
        self._resume = {
            "epoch": int(state_dict["epoch"]),
            "batches_consumed": int(state_dict["batches_consumed"]),
        }
