"""Packed data sets: WebDataset tar shards with a small index, streamed for training.

`vitssl data pack` writes them (`pack`); `vitssl.data.build_dataset` opens a shard spec as a
`ShardDataset` (`index` says what a spec is); the training loader streams them (`stream`,
in the epoch layout of `plan`).
"""

from vitssl.data.shards.dataset import DEFAULT_SHUFFLE_BUFFER, ShardDataset
from vitssl.data.shards.index import (
           INDEX_NAME,
           ShardIndex,
           ShardSpecError,
           is_shard_spec,
           open_index,
)

__all__ = ["DEFAULT_SHUFFLE_BUFFER", "INDEX_NAME", "ShardDataset", "ShardIndex", "ShardSpecError", "is_shard_spec",
           "open_index"]
