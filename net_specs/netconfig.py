"""A net as a run uses it: one record instead of a train of arguments.

A Model record names its dataset; a run needs the dataset resolved (a
template's custom class count, mean and names), the trunk width (the demo's
and the tests' narrowed nets) and how the Python data layers load (where,
in which order, with how many loader processes). `NetConfig` carries them
together from the command line (net_specs.resolve.resolve_args) to `build`,
training runs, scoring and the predictor; per-run changes (a multi-GPU
rank's seed) are `dataclasses.replace` of it.
"""
from dataclasses import dataclass, replace
from typing import Optional, Union

from common.seed import SEED

from .datasets import Dataset, Inputs
from .models import Model, get_model


@dataclass(frozen=True)
class NetConfig:
    model: Model
    dataset: Dataset                # resolved: custom classes, mean and names applied
    width: float = 1.0              # trunk channel multiplier (< 1: the narrowed stand-ins)
    root: Optional[str] = None      # data location (None: the dataset's own)
    prefetch: bool = True           # data layers load ahead of the net
    seed: int = SEED                # the training order's (multi-GPU ranks each take their own)
    workers: Optional[int] = None   # loader processes per data layer (None: the layer's default)
    queue_depth: Optional[int] = None  # examples each loader keeps ready (None: the layer's default)

    @classmethod
    def of(cls, net: Union["NetConfig", Model, str], **settings) -> "NetConfig":
        """A NetConfig from a model name, a Model (on its own dataset unless
        `dataset` is given) or another NetConfig, with `settings` replaced."""
        if isinstance(net, NetConfig):
            if settings.get("dataset", net) is None:
                del settings["dataset"]           # None: the record's own, as for a Model
            return replace(net, **settings) if settings else net
        model = get_model(net) if isinstance(net, str) else net
        if settings.get("dataset") is None:
            settings["dataset"] = model.get_dataset()
        return cls(model, **settings)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def inputs(self) -> Inputs:
        """The input variant the model reads from the dataset (NYUD: color, HHA, ...)."""
        return self.dataset.input_variant(self.model.inputs)

    def with_val_split(self, split: Optional[str]) -> "NetConfig":
        """The record scoring `split` instead of the dataset's val split (None: as is)."""
        if not split:
            return self
        return replace(self, dataset=replace(self.dataset, val=replace(self.dataset.val, split=split)))

    def data_root(self, source) -> str:
        """Where `source` (dataset.train or .val) is read: `root`, else its own."""
        return self.root or source.root
